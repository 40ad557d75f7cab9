"""The shipped understanding model and `midilm describe / ask / chat` as users run them (offline, real files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from midilm.understand.model import default_understand_model_path, model_kind
from tests.conftest import shared_path

MODEL = default_understand_model_path()
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_PROXY": "*",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
shipped = pytest.mark.skipif(not MODEL.is_dir(), reason="no understanding model shipped in this checkout")


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "midilm.cli", *args], capture_output=True, text=True, input=stdin,
                          timeout=180, env=OFFLINE)


def test_corrupt_and_missing_files_fail_with_one_line():
    bad = shared_path("fixtures", "MIDIs_corrupted", "ValueError_Control168.mid")
    for args in (("ask", str(bad), "What key is this piece in?"), ("describe", "/nonexistent/x.mid")):
        r = run(*args)
        assert r.returncode == 1
        assert r.stderr.startswith("midilm: error: cannot read MIDI") and len(r.stderr.strip().splitlines()) == 1
        assert r.stdout == ""


def test_missing_model_directory_is_one_line(tmp_path):
    good = shared_path("fixtures", "MIDIs_one_track", "POP909_008.mid")
    r = run("ask", str(good), "What key?", "--model", str(tmp_path / "nothing"))
    assert r.returncode == 1 and "model directory not found" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "midilm.json").write_text(json.dumps({"kind": "no-such-kind"}))
    r = run("describe", str(good), "--model", str(tmp_path / "other"))
    assert r.returncode == 1 and "unknown model kind" in r.stderr


@shipped
def test_shipped_model_layout_and_size():
    assert model_kind(MODEL) == "midi-llama"
    names = {p.name for p in MODEL.iterdir()}
    assert {"encoder", "llm", "adapter", "projector.safetensors", "midilm.json", "README.md"} <= names
    files = [p for p in MODEL.rglob("*") if p.is_file()]
    assert not any(p.suffix in (".bin", ".pt", ".pkl", ".pth") for p in files)  # safetensors only
    assert sum(p.stat().st_size for p in files) <= 40 * 2**20


@shipped
def test_ask_names_a_key_for_a_held_out_file():
    from midilm.annotate.questions import normalise_key

    heldout = shared_path("pop909", "POP909", "010", "010.mid")  # song numbers divisible by 10 are held out
    r = run("ask", str(heldout), "What key is this piece in?")
    assert r.returncode == 0, r.stderr
    assert normalise_key(r.stdout) is not None, r.stdout


@shipped
def test_chat_reads_questions_from_a_pipe_until_quit():
    heldout = shared_path("nottingham", "MIDI", "ashover1.mid")  # index row 0: held out
    r = run("chat", str(heldout), stdin="What key is this piece in?\nWhat is the time signature?\nquit\nignored\n")
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.splitlines() if x.strip()]
    assert len(lines) == 2
    assert any(c.isdigit() for c in lines[1])  # a meter such as 6/8


@shipped
def test_python_api_describe_and_batches_agree():
    pytest.importorskip("torch")
    from midilm.music.midi_io import read_midi
    from midilm.understand import load_understanding_model

    model = load_understanding_model()
    piece = read_midi(shared_path("pop909", "POP909", "020", "020.mid"))
    one = model.describe(piece)
    assert len(one.split()) >= 3
    assert model.describe_many([piece, piece]) == [one, one]
    q = "What is the time signature?"
    assert model.ask_many([piece], [q]) == [model.ask(piece, q)]
    sampled = {model.describe(piece, temperature=1.0, seed=s) for s in (1, 2, 3)}
    assert model.describe(piece, temperature=1.0, seed=1) in sampled and len(sampled) > 1


@shipped
def test_shipped_train_config_agrees_with_the_manifest():
    from midilm.models.manifest import read_manifest

    manifest = read_manifest(MODEL, expected_kind="midi-llama")
    cfg = json.loads((MODEL / "train_config.json").read_text())
    pool = "fields" if manifest["pool_fields"] else ",".join(str(i) for i in manifest["pool_layers"])
    assert (cfg["projector"], cfg["pool_layers"], cfg["max_windows"], cfg["k"]) == (
        manifest["projector"], pool, manifest["max_windows"], manifest["k"])
    assert cfg.get("pitch_classes", False) == manifest.get("pitch_classes", False)


@shipped
def test_describe_writes_two_to_four_sentences_of_checkable_facts():
    """Issue 15: captions of 2-4 sentences (>= 25 words) stating key, meter, tempo, instruments, texture and
    dynamics (whether each is right is measured by `midilm eval understand`, not asserted here)."""
    from midilm.evaluate.caption_facts import caption_facts, sentences, word_count

    heldout = shared_path("pop909", "POP909", "020", "020.mid")  # song numbers divisible by 10 are held out
    r = run("describe", str(heldout))
    assert r.returncode == 0, r.stderr
    text = r.stdout.strip()
    assert 2 <= len(sentences(text)) <= 4 and word_count(text) >= 25, text
    stated = {t for t, _ in caption_facts(text)}
    assert {"key", "meter", "tempo", "instruments", "texture", "dynamics"} <= stated, text


@shipped
def test_shipped_legacy_layout_loads_on_a_device_in_a_dtype():
    torch = pytest.importorskip("torch")
    from midilm.understand import load_understanding_model

    model = load_understanding_model(device="cpu", dtype="bf16")  # the legacy layout: llm/ copied in
    assert {p.dtype for p in model.model.llm.parameters()} == {torch.bfloat16}
    assert model.model.device.type == "cpu"


@shipped
def test_shipped_key_pathway_names_its_key_in_answers_and_captions():
    """Issue 15's key goal: the shipped model's key pathway reads the key from the notes and guided decoding
    makes the answers and captions name it (v2 answered F minor for this held-out G major song)."""
    pytest.importorskip("torch")
    from midilm.annotate.analyze import analyze_piece
    from midilm.annotate.questions import normalise_key
    from midilm.evaluate.caption_facts import caption_facts
    from midilm.models.midi_llama import KEY_NAMES
    from midilm.music.midi_io import read_midi
    from midilm.understand import load_understanding_model
    from midilm.understand.model import piece_notes

    model = load_understanding_model()
    cfg = model.model.config
    assert cfg.key_pathway and cfg.key_guide > 0 and cfg.slots == cfg.k + 1
    piece = read_midi(shared_path("pop909", "POP909", "010", "010.mid"))  # held out
    probs = model.model.key_pathway.probs([piece_notes(piece)])[0]
    top = KEY_NAMES[int(probs.argmax())]
    assert top == analyze_piece(piece)["key"] == "G major"
    assert normalise_key(model.ask(piece, "What key is this piece in?")) == top
    assert model.ask(piece, "Is it major or minor?").lower().startswith(("major", "it is in a major"))
    stated = dict(caption_facts(model.describe(piece)))
    assert normalise_key(stated["key"]) == top
