"""The token-input understanding baselines (ABC text, native AMT ids): ids, training, one-directory loading."""

from __future__ import annotations

import random
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from midilm.understand.prompt import IGNORE  # noqa: E402
from tests.conftest import shared_path  # noqa: E402

T2M = shared_path.__globals__["REPO"] / "src" / "midilm" / "data" / "models" / "midilm-t2m-tiny"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A tiny dataset in the builder's layout from real Nottingham tunes: pieces and 20 s clips."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from midilm.annotate.analyze import analyze_piece
    from midilm.annotate.captions import make_captions
    from midilm.annotate.questions import make_questions
    from midilm.music.midi_io import read_midi

    folder = shared_path("nottingham")
    files = sorted(folder.rglob("*.mid"))[:4]
    rows = []
    for i, f in enumerate(files):
        piece = read_midi(f)
        for unit, (a, b) in (("piece", (0.0, piece.duration)), ("clip", (0.0, 20.0))):
            analysis = analyze_piece(piece if unit == "piece" else piece.excerpt(a, b))
            qa = [q for q in make_questions(analysis, random.Random(i)) if q["type"] == "key"][:1]
            rows.append({"unit": unit, "path": str(f), "clip_start": a, "clip_end": b, "split": "train",
                         "captions": make_captions(analysis, seed=i, n=2), "qa": qa})
    root = tmp_path_factory.mktemp("ds")
    pq.write_table(pa.Table.from_pylist(rows), root / "train.parquet")
    return root


def test_amt_ids_are_whole_events_in_the_music_block():
    from midilm.models.vocab import layout_for
    from midilm.music.examples import example_piece
    from midilm.understand.token_input import amt_ids

    layout = layout_for(T2M)
    ids = amt_ids(layout, example_piece(), 60)
    assert 0 < len(ids) <= 60 and len(ids) % 3 == 0
    assert all(layout.music_offset <= x < layout.music_offset + 55030 for x in ids)


@pytest.mark.skipif(shutil.which("midi2abc") is None, reason="abcmidi not installed")
def test_abc_ids_fit_the_budget_and_end_at_a_bar():
    from transformers import AutoTokenizer

    from midilm.music.examples import example_piece
    from midilm.understand.token_input import abc_ids

    tok = AutoTokenizer.from_pretrained(T2M)
    ids = abc_ids(tok, example_piece(), 150)
    text = tok.decode(ids)
    assert len(ids) <= 150 and "K:" in text and text.rstrip().endswith("|")


def test_native_variant_learns_answers_only_and_loads_as_one_directory(dataset, tmp_path):
    from midilm.music.midi_io import read_midi
    from midilm.train.understand_baselines import BaselineConfig, TokenExamples, train_baseline
    from midilm.understand import load_understanding_model

    # one question per row, so the loss falls on the same answers each time round
    cfg = BaselineConfig(data=str(dataset), output=str(tmp_path / "native"), representation="amt", llm=str(T2M),
                         steps=8, batch_size=2, lr=5e-3, logging_steps=1, save_steps=1000, max_midi_tokens=60,
                         max_len=100, p_caption=0.0, p_multi_turn=0.0, max_rows=2, warmup_ratio=0.0)
    out = train_baseline(cfg)
    import json

    losses = [h["loss"] for h in json.loads((out / "loss_history.json").read_text()) if "loss" in h]
    assert sum(losses[-2:]) < sum(losses[:2])
    # labels cover the answer only, never the music or the question
    from midilm.understand.token_input import load_llm

    _, tok, layout = load_llm(T2M)
    ex = TokenExamples([{"qa": [{"question": "What key is this piece in?", "answer": "It is in G major.",
                                 "type": "key"}], "captions": []}], [[layout.music_offset + 5] * 6], tok, cfg)[0]
    learned = [t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE]
    assert "G major" in tok.decode(learned) and all(t < layout.music_offset for t in learned)

    model = load_understanding_model(out)
    assert model.kind == "amt-native"
    piece = read_midi(sorted(shared_path("nottingham").rglob("*.mid"))[0])
    answer = model.ask(piece, "What key is this piece in?", max_new_tokens=12)
    assert isinstance(answer, str)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not list((out / "adapter").rglob("*.bin")) and not list((out / "llm").rglob("*.bin"))
