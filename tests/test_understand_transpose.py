"""Transposition in the understanding recipes: moved notes, rewritten key answers, and examples that pair
each conversation with the features of the copy it talks about."""

from __future__ import annotations

import random

import numpy as np
import pytest

from midilm.annotate.analyze import analyze_piece
from midilm.annotate.questions import answer_is_correct, make_questions
from midilm.codecs.octuple import encode_piece
from midilm.music.midi_io import read_midi
from midilm.train.understand import (
    TRANSPOSE_SAFE,
    UnderstandConfig,
    example_turns,
    transpose_key_answer,
    transpose_notes,
    transpose_shifts,
    transposed_turns,
)
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def tune():
    path = sorted(shared_path("nottingham").rglob("*.mid"))[3]
    piece = read_midi(path)
    row = {"unit": "piece", "path": str(path), "captions": ["A folk tune."],
           "qa": make_questions(analyze_piece(piece), random.Random(0))}
    return piece, row


def test_key_answers_move_with_the_notes():
    assert transpose_key_answer("It is in G major.", 2) == "It is in A major."
    assert transpose_key_answer("The key is Bb minor.", 3) == "The key is C# minor."
    assert transpose_key_answer("C# minor", -1) == "C minor"
    assert transpose_key_answer("Yes.", 4) == "Yes."
    assert transpose_shifts(6) == [-5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6] and transpose_shifts(0) == []


def test_moved_octuple_notes_equal_the_moved_piece(tune):
    piece, _ = tune
    for s in (-5, 1, 6):
        assert np.array_equal(transpose_notes(encode_piece(piece), s), encode_piece(piece.transposed(s)))


def test_transposed_questions_hold_for_the_transposed_piece(tune):
    piece, row = tune
    rng = random.Random(1)
    seen = set()
    for s in transpose_shifts(6):
        truth = analyze_piece(piece.transposed(s))
        for question, answer in transposed_turns(row, rng, 3, s, 1.0, {"key": 3.0}):
            qtype = next(q["type"] for q in row["qa"] if q["question"] == question)
            assert qtype in TRANSPOSE_SAFE or qtype == "key"
            assert answer_is_correct(qtype, answer, truth), (s, qtype, answer)
            seen.add(qtype)
    assert "key" in seen and len(seen) >= 4


def test_examples_pair_the_conversation_with_its_copy(tune):
    _, row = tune
    cfg = UnderstandConfig(data="", output="", transpose=6, p_transpose=0.75, short_only=True, boost="key=6")
    shifts = transpose_shifts(6)
    moved = 0
    for i in range(200):
        turns, shift = example_turns(row, 2, random.Random(i), cfg, shifts)
        assert turns and shift in [0, *shifts]
        if shift:
            moved += 1
            for question, answer in turns:
                original = next(q["answer"] for q in row["qa"] if q["question"] == question)
                assert answer == transpose_key_answer(original, shift)
    assert 100 < moved < 190  # p_transpose of the examples, give or take
    # the same seed draws the same example: the baselines rely on it to see MIDI-LLaMA's conversations
    assert example_turns(row, 2, random.Random(7), cfg, shifts) == example_turns(row, 2, random.Random(7), cfg, shifts)


def test_example_set_feeds_the_features_of_the_copy_it_asks_about(tune):
    from transformers import AutoTokenizer

    from midilm.models.midi_llama import MidiLlamaConfig
    from midilm.train.understand import ExampleSet

    _, row = tune
    tok = AutoTokenizer.from_pretrained(shared_path.__globals__["REPO"] / "src" / "midilm" / "data" / "models" /
                                        "midilm-understand-tiny" / "llm")
    cfg = UnderstandConfig(data="", output="", transpose=6, short_only=True, max_len=96)
    base = np.zeros((1, 1, 4), dtype=np.float32)
    shifted = {s: np.full((1, 1, 4), s, dtype=np.float32) for s in transpose_shifts(6)}
    data = ExampleSet([row], base, tok, MidiLlamaConfig(encoder_hidden=4, llm_hidden=8), cfg, 2, shifted)
    for i in range(40):
        item = data[i]
        turns, shift = example_turns(row, 2, random.Random(cfg.seed * 1_000_003 + i), cfg, transpose_shifts(6))
        assert float(item["midi_features"][0, 0]) == shift
        assert tok.decode([t for t, lab in zip(item["enc"].after, item["enc"].labels) if lab >= 0]).startswith(
            turns[0][1].strip()[:8])


def test_source_boost_draws_the_rare_sources_more_often(tune):
    from transformers import AutoTokenizer

    from midilm.models.midi_llama import MidiLlamaConfig
    from midilm.train.understand import ExampleSet

    _, row = tune
    tok = AutoTokenizer.from_pretrained(shared_path.__globals__["REPO"] / "src" / "midilm" / "data" / "models" /
                                        "midilm-understand-tiny" / "llm")
    rows = [dict(row, source="folk"), dict(row, source="band")]
    feats = np.stack([np.zeros((1, 4)), np.ones((1, 4))]).astype(np.float32)  # the feature names the row
    plain = ExampleSet(rows, feats, tok, MidiLlamaConfig(encoder_hidden=4, llm_hidden=8),
                       UnderstandConfig(data="", output="", short_only=True, max_len=96), 2)
    assert [float(plain[i]["midi_features"][0, 0]) for i in range(4)] == [0, 1, 0, 1]  # as before: row i mod 2
    boosted = ExampleSet(rows, feats, tok, MidiLlamaConfig(encoder_hidden=4, llm_hidden=8),
                         UnderstandConfig(data="", output="", short_only=True, max_len=96, source_boost="band=3"), 2)
    assert len(boosted) == 4 * 16
    drawn = [float(boosted[i]["midi_features"][0, 0]) for i in range(40)]
    assert drawn.count(1.0) == 30 and drawn.count(0.0) == 10


def test_stage_two_caption_examples_can_keep_to_long_captions():
    from midilm.train.understand import conversation

    long = ("A folk tune in G major for piano, in 6/8 at a lively 120 bpm. It is loud, with a melody over chords, "
            "and its notes span G3 to D6. The mood might be cheerful.")
    row = {"captions": ["A folk tune.", long], "qa": []}
    long_only = UnderstandConfig(data="", output="", p_caption=1.0, min_caption_words=25)
    drawn = {conversation(row, 2, random.Random(i), long_only)[0][1] for i in range(20)}
    assert drawn == {row["captions"][1]}  # the one-sentence caption is never a stage-2 target
    everything = UnderstandConfig(data="", output="", p_caption=1.0)
    assert {conversation(row, 2, random.Random(i), everything)[0][1] for i in range(20)} == set(row["captions"])
    # stage 1 (feature alignment) keeps every caption; a row with only short captions still gets one
    assert {conversation(row, 1, random.Random(i), long_only)[0][1] for i in range(20)} == set(row["captions"])
    short = {"captions": ["A folk tune."], "qa": []}
    assert conversation(short, 2, random.Random(0), long_only) == [(conversation(short, 2, random.Random(0),
                                                                                  everything)[0][0], "A folk tune.")]


def test_fact_captions_of_transposed_copies_state_the_moved_key(tune):
    from midilm.annotate.captions import fact_caption
    from midilm.evaluate.caption_facts import caption_precision

    piece, row = tune
    row = {**analyze_piece(piece), **row}
    cfg = UnderstandConfig(data="", output="", transpose=6, p_caption=1.0, caption_style="facts")
    shifts_seen = set()
    for i in range(30):
        turns, shift = example_turns(row, 2, random.Random(i), cfg, transpose_shifts(6))
        assert len(turns) == 1
        truth = analyze_piece(piece.transposed(shift)) if shift else row
        scored = caption_precision(turns[0][1], truth)
        assert any(f["type"] == "key" for f in scored["facts"]) and all(f["correct"] for f in scored["facts"]
                                                                        if f["type"] == "key"), (shift, turns)
        shifts_seen.add(shift)
    assert len(shifts_seen) > 3  # transposed copies and the original alike
    # the default (dataset captions) is unchanged: the row's own captions, never a fact caption
    plain = UnderstandConfig(data="", output="", transpose=6, p_caption=1.0)
    for i in range(10):
        turns, shift = example_turns(row, 2, random.Random(i), plain, transpose_shifts(6))
        assert all(a != fact_caption(row) for _, a in turns)


def test_loss_segments_put_continued_runs_after_each_other():
    from midilm.train.understand import loss_segments

    history = [{"stage": "stage1", "step": 10, "loss": 3.0}, {"stage": "stage1", "step": 20, "loss": 2.0},
               {"stage": "stage2", "step": 10, "loss": 1.5}, {"stage": "stage2", "step": 20, "loss": 1.2},
               {"stage": "stage2", "step": 20, "train_loss": 1.3},  # the summary line has no loss
               {"stage": "stage2", "step": 10, "loss": 1.1}, {"stage": "stage2", "step": 20, "loss": 1.0}]
    segs = loss_segments(history)
    assert [s[0] for s in segs] == ["stage1", "stage2", "stage2 (2)"]
    assert segs[1][1] == [30.0, 40.0] and segs[2][1] == [50.0, 60.0] and segs[2][2] == [1.1, 1.0]
