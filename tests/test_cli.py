"""The command line as users run it: real processes, real files, exact output forms."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from midilm.codecs.amt.encode import encode_midi
from tests.conftest import shared_path


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "midilm.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_tokenize_json_one_object_per_file_and_continues_after_errors():
    good = shared_path("fixtures", "MIDIs_one_track", "POP909_008.mid")
    bad = shared_path("fixtures", "MIDIs_corrupted", "ValueError_Control168.mid")
    empty = shared_path("fixtures", "MIDIs_one_track", "empty.mid")
    r = run("tokenize", str(bad), str(good), str(empty), "--json")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["path"] for x in lines] == [str(bad), str(good), str(empty)]
    assert "error" in lines[0] and "error" in lines[2]
    assert lines[1]["tokens"] == encode_midi(good)
    assert r.returncode == 1 and "Traceback" not in r.stderr


def test_detokenize_writes_a_playable_file_for_garbage(tmp_path):
    tokens = tmp_path / "t.json"
    tokens.write_text(json.dumps([55026, 0, 10050, 11060, 7, 10000, 99999, -3, "x", 1.5, 100, 10050]))
    out = tmp_path / "out.mid"
    r = run("detokenize", str(tokens), "-o", str(out), "--bpm", "96", "--meter", "3/4")
    assert r.returncode == 0, r.stderr
    assert "dropped" in r.stderr and out.exists()
    info = json.loads(run("info", str(out), "--json").stdout)
    assert info["notes"] == 1 and info["bpm"] == 96 and info["time_signature"] == "3/4"


def test_detokenize_of_nothing_writes_an_empty_but_valid_file(tmp_path):
    (tmp_path / "t.json").write_text("[]")
    r = run("detokenize", str(tmp_path / "t.json"), "-o", str(tmp_path / "o.mid"))
    assert r.returncode == 0 and (tmp_path / "o.mid").stat().st_size > 0


@pytest.mark.parametrize("content,args", [
    ("{not json", []),
    ('{"a": 1}', []),
    ("[1, 2]", ["--bpm", "0"]),
    ("[1, 2]", ["--bpm", "nan"]),
    ("[1, 2]", ["--meter", "3/5"]),
])
def test_bad_input_is_one_line_and_non_zero(tmp_path, content, args):
    (tmp_path / "t.json").write_text(content)
    r = run("detokenize", str(tmp_path / "t.json"), "-o", str(tmp_path / "o.mid"), *args)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "o.mid").exists()


def test_info_summary_and_errors(tmp_path):
    r = run("example", "-o", str(tmp_path / "ex.mid"))
    assert r.returncode == 0
    r = run("info", str(tmp_path / "ex.mid"))
    assert r.returncode == 0
    for word in ("length", "100 bpm", "4/4", "Acoustic Grand Piano", "Drums", "208"):
        assert word in r.stdout
    bad = shared_path("fixtures", "MIDIs_corrupted", "ValueError_Control168.mid")
    r = run("info", str(bad))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "ValueError_Control168.mid" in r.stderr


def test_tokenize_lines_writes_training_lines(tmp_path):
    files = sorted(shared_path("nottingham", "MIDI").glob("*.mid"))[:20]
    out = tmp_path / "lines.txt"
    r = run("tokenize", *map(str, files), "--lines", str(out))
    assert r.returncode == 0, r.stderr
    lines = out.read_text().splitlines()
    assert lines and all(len(x.split()) == 1024 for x in lines)


# --- describe / ask / chat: --model analysis and --device ------------------------------------------------


def _sentences(text: str) -> list[str]:
    import re

    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def test_describe_and_ask_from_the_analysis_of_the_example(tmp_path):
    example = tmp_path / "ex.mid"
    assert run("example", "-o", str(example)).returncode == 0
    r = run("describe", str(example), "--model", "analysis")
    assert r.returncode == 0, r.stderr
    caption = r.stdout.strip()
    assert 2 <= len(_sentences(caption)) <= 4 and len(caption.split()) >= 25, caption
    # the example's facts (midilm analyze): key, meter, tempo, instruments, texture, dynamics
    for fact in ("in C major", "4/4 time", "about 100 bpm", "drums, piano and electric bass", "homophonic",
                 "moderately loud"):
        assert fact in caption, (fact, caption)
    r = run("ask", str(example), "What key is this piece in?", "--model", "analysis")
    assert r.returncode == 0 and "C major" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "midilm.cli", "chat", str(example), "--model", "analysis"],
                       input="What instruments play?\nWhat is the time signature?\n", capture_output=True,
                       text=True, timeout=120)
    answers = r.stdout.strip().splitlines()
    assert r.returncode == 0 and len(answers) == 2, r.stdout + r.stderr
    assert "piano" in answers[0].lower() and "4/4" in answers[1]


@pytest.mark.parametrize("parts", [
    ("pop909", "POP909", "010", "010.mid"),  # held-out pop song (piano arrangement)
    ("nottingham", "MIDI", "jigs112.mid"),  # a jig in 6/8
    ("fixtures", "MIDIs_multitrack", "Aicha.mid"),  # a band arrangement with drums and a key change
])
def test_describe_from_the_analysis_states_only_the_analysis_facts(parts):
    """Every fact the caption states agrees with `midilm analyze` of the same file (the evaluation's
    per-fact check, `answer_is_correct`), in 2-4 sentences."""
    from midilm.annotate.questions import answer_is_correct

    path = shared_path(*parts)
    r = run("describe", str(path), "--model", "analysis")
    assert r.returncode == 0, r.stderr
    caption = r.stdout.strip()
    analysis = json.loads(run("analyze", str(path), "--json").stdout)
    assert 2 <= len(_sentences(caption)) <= 4 and len(caption.split()) >= 25, caption
    for qtype, field in (("key", "key"), ("mode", "mode"), ("tempo", "bpm"), ("meter", "time_signature"),
                         ("instruments", "instruments"), ("texture", "texture"), ("dynamics", "dynamics"),
                         ("duration", "duration")):
        assert analysis.get(field), (field, analysis)
        assert answer_is_correct(qtype, caption, analysis), (qtype, analysis.get(field), caption)


def test_understanding_device_cpu_works_and_an_absent_device_is_one_line(tmp_path):
    import torch

    example = tmp_path / "ex.mid"
    run("example", "-o", str(example))
    r = run("describe", str(example), "--device", "cpu")
    if "model directory not found" in r.stderr:
        pytest.skip("the shipped understanding model is not in this install")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the absent-device case needs one without")
    for command in (("describe", str(example)), ("ask", str(example), "What key?")):
        r = run(*command, "--device", "cuda")
        assert r.returncode == 1 and r.stdout == "", r.stdout
        assert r.stderr.startswith("midilm: error: --device cuda: this machine has no cuda device")
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = run("describe", str(example), "--device", "nonsense")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "not a device name" in r.stderr


def test_generate_on_an_absent_device_is_one_line_and_writes_nothing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the absent-device case needs one without")
    out = tmp_path / "x.mid"
    r = run("generate", "A calm piano piece.", "-o", str(out), "--device", "cuda", "--max-tokens", "30")
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr.startswith("midilm: error: --device cuda: this machine has no cuda device"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_describe_from_the_analysis_of_a_bad_file_is_one_line():
    bad = shared_path("fixtures", "MIDIs_corrupted", "ValueError_Control168.mid")
    r = run("describe", str(bad), "--model", "analysis")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "ValueError_Control168" in r.stderr


def test_train_understand_flags_reach_the_config():
    """Every UnderstandConfig field the recipe documents is settable from the CLI (the command copies the
    namespace's fields into the config, so a missing flag silently trains with the default)."""
    from dataclasses import fields

    from midilm.cli import build_parser
    from midilm.train.understand import UnderstandConfig

    args = build_parser().parse_args(["train", "understand", "--data", "D", "-o", "O", "--stage", "2",
                                      "--caption-style", "facts", "--pitch-classes", "--pitch-class-gain", "16"])
    values = {f.name: getattr(args, f.name) for f in fields(UnderstandConfig) if hasattr(args, f.name)}
    assert values["caption_style"] == "facts" and values["pitch_classes"] is True
    assert values["pitch_class_gain"] == 16.0
    plain = build_parser().parse_args(["train", "understand", "--data", "D", "-o", "O", "--stage", "2"])
    assert plain.caption_style == "dataset" and plain.pitch_classes is False
    assert plain.key_pathway is False and plain.source_boost == ""
    keyed = build_parser().parse_args(["train", "understand", "--data", "D", "-o", "O", "--stage", "2",
                                       "--key-pathway", "--source-boost", "freedoom=4"])
    assert keyed.key_pathway is True and keyed.source_boost == "freedoom=4"
    guided = build_parser().parse_args(["train", "understand", "--data", "D", "-o", "O", "--stage", "2",
                                        "--genre-pathway", "--genre-guide", "2", "--instrument-guide"])
    assert guided.genre_pathway is True and guided.genre_guide == 2.0 and guided.instrument_guide is True
    assert plain.genre_pathway is False and plain.instrument_guide is False


def test_train_understand_baseline_takes_the_caption_style():
    """The ABC baseline is trained with v2's recipe, which uses the fixed fact captions."""
    from dataclasses import fields

    from midilm.cli import build_parser
    from midilm.train.understand_baselines import BaselineConfig

    args = build_parser().parse_args(["train", "understand-baseline", "--representation", "abc", "--data", "D",
                                      "-o", "O", "--llm", "L", "--caption-style", "facts"])
    values = {f.name: getattr(args, f.name) for f in fields(BaselineConfig) if hasattr(args, f.name)}
    assert values["caption_style"] == "facts"


def test_generate_refuses_guidance_on_vllm_before_loading(tmp_path):
    """vLLM's logits processors see no unconditioned branch, so --cfg cannot run there: one line, exit 1,
    no file, and no model load first (this machine has no vLLM; the refusal comes before the import)."""
    out = tmp_path / "x.mid"
    r = run("generate", "A jig.", "-o", str(out), "--backend", "vllm", "--cfg", "2")
    assert r.returncode == 1 and "--cfg" in r.stderr and "vllm" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()
