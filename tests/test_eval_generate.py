"""`midilm eval generate`: report format, targets from the prompt, metrics measured from the notes, set
metrics against reference MIDI, report pages; `eval prompts` with reference copies."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from midilm.evaluate.generation import targets_of  # noqa: E402
from midilm.generate.prompts_file import read_prompts  # noqa: E402
from midilm.models.tokenizer import train_text_tokenizer  # noqa: E402
from midilm.models.vocab import MIDI_LLM_PROMPT, MusicLayout  # noqa: E402
from tests.conftest import shared_path  # noqa: E402


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory):
    from midilm.models.encoder import MusicBertConfig, MusicBertModel

    out = tmp_path_factory.mktemp("tiny-encoder")
    torch.manual_seed(0)
    MusicBertModel(MusicBertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64, max_notes=256)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-t2m")
    tok = train_text_tokenizer([MIDI_LLM_PROMPT + "a piano piece in D major at 90 bpm"] * 4, 300, out)
    layout = MusicLayout(len(tok))
    cfg = transformers.LlamaConfig(vocab_size=layout.vocab_size, hidden_size=16, intermediate_size=32,
                                   num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(out)
    layout.save(out)
    return out


def test_targets_come_from_the_prompt_when_missing():
    t = targets_of({"id": "a", "prompt": "A slow waltz in E-flat major at 72 bpm for violin and piano."})
    assert t["key"] == "E-flat major" and t["bpm"] == 72.0 and t["meter"] == "3/4"
    assert t["instruments"] == ["piano", "violin"]
    t = targets_of({"id": "b", "prompt": "whatever", "key": "D minor", "bpm": 140, "instruments": ["drums"]})
    assert t["key"] == "D minor" and t["bpm"] == 140 and t["instruments"] == ["drums"]


def test_bad_prompt_files_are_refused(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": "../x", "prompt": "y"}\n')
    with pytest.raises(ValueError, match="not a file name"):
        read_prompts(p)


def test_eval_generate_writes_midi_and_report(tiny_model_dir, tiny_encoder_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "one", "prompt": "A piano piece in D major at 90 bpm."}) + "\n"
                       + json.dumps({"id": "two", "prompt": "Drums and bass.", "key": "A minor"}) + "\n")
    refs = tmp_path / "refs"
    refs.mkdir()
    for name, song in (("one", "010"), ("two", "020")):  # held-out POP909 songs as ground truth
        shutil.copyfile(shared_path("pop909", "POP909", song, f"{song}.mid"), refs / f"{name}.mid")
    out = tmp_path / "eval"
    r = subprocess.run([sys.executable, "-m", "midilm.cli", "eval", "generate", "--prompts", str(prompts),
                        "--out", str(out), "--model", str(tiny_model_dir), "--max-tokens", "90",
                        "--reference", str(refs), "--encoder", str(tiny_encoder_dir)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    sets = report["sets"]
    assert sets["n_reference"] == 2 and not sets["missing_references"]
    for k in ("polyphony", "note_density", "compression_ratio", "pitch_class_entropy"):
        assert sets["reference"][k]["n"] == 2 and sets["reference"][k]["mean"] > 0
        assert 0.0 <= sets["distributions"][k]["overlap_area"] <= 1.0
    assert sets["reference"]["compression_ratio"]["mean"] > 1.2  # pop songs repeat
    # 2 pieces a side: singular covariances (issue 16: sqrtm(S1 S2) gave NaN on some machines), still a value
    assert sets["frechet_symbolic"]["value"] > 0 and sets["frechet_symbolic"]["small_sets"] is True
    assert sets["frechet_encoder"]["value"] > 0 and sets["frechet_encoder"]["dimensions"] == 32
    assert "indicative only: 2 generated and 2 reference pieces for 32 dimensions" in sets["frechet_encoder"]["note"]
    assert "skipped" in sets["audio"]["note"]
    html = (out / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert {"plots/pitch_classes.png", "plots/key_confusion.png", "plots/pianoroll_0.png"} <= set(images)
    assert all((out / i).is_file() for i in images)
    assert (out / "one.mid").exists() and (out / "two.mid").exists()
    assert set(report) >= {"summary", "items"}
    for item in report["items"]:
        assert set(item) >= {"id", "ck", "ckd", "tb", "tbt", "key", "bpm", "instrument_recall", "valid", "polyphony",
                             "note_density", "compression_ratio"}
        assert item["valid"] is True
    one = report["items"][0]
    assert one["target_bpm"] == 90.0 and one["target_key"] == "D major"
    assert one["instruments"] == ["piano"]  # the prompt's instrument is the allow-list
    sidecar = json.loads((out / "one.json").read_text())
    assert sidecar["bpm"] == 90.0  # the grid follows the prompt ...
    assert one["bpm"] != 90.0 or one["tb"] is True  # ... but the judged tempo is measured from the notes


def test_eval_prompts_copies_references(tmp_path):
    from midilm.evaluate.generation import write_references

    song = shared_path("pop909", "POP909", "010", "010.mid")
    items = [{"id": "a", "path": str(song)}, {"id": "b", "path": str(tmp_path / "gone.mid")}]
    assert write_references(items, tmp_path / "refs") == 1
    assert (tmp_path / "refs" / "a.mid").read_bytes() == song.read_bytes()


def test_encoder_that_is_no_model_is_refused_before_generating(tmp_path, capsys):
    from midilm.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "one", "prompt": "A piano piece."}) + "\n")
    rc = main(["eval", "generate", "--prompts", str(prompts), "--out", str(tmp_path / "o"), "--encoder", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("midilm: error:") and "no config.json" in err
    assert not (tmp_path / "o").exists()
