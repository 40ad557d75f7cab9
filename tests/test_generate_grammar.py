"""The sampling grammar: whatever a model prefers, what it lets through decodes cleanly and obeys the rules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midilm.codecs.amt import vocab
from midilm.codecs.amt.decode import decode_tokens
from midilm.generate.grammar import DURATION, NOTE, TIME, AmtGrammar, GrammarConfig


def run_grammar(config: GrammarConfig, choices: list[int], steps: int) -> list[int]:
    """Walk the grammar, each step picking the allowed id at a pseudo-random position."""
    g = AmtGrammar(config)
    out = []
    for k in range(steps):
        if not g.can_continue():
            break
        mask = g.allowed_mask()
        allowed = np.flatnonzero(mask)
        tok = int(allowed[choices[k % len(choices)] % len(allowed)])
        g.advance(tok)
        out.append(tok)
    return out[: len(out) - len(out) % 3]


@settings(max_examples=60, deadline=None)
@given(
    choices=st.lists(st.integers(0, 10**9), min_size=1, max_size=50),
    instruments=st.one_of(st.none(), st.sets(st.integers(0, 128), min_size=1, max_size=20)),
    cap=st.integers(1, 6),
    max_melodic=st.integers(1, 15),
)
def test_grammar_output_always_decodes_and_obeys(choices, instruments, cap, max_melodic):
    config = GrammarConfig.make(instruments, max_notes_per_onset=cap, max_melodic=max_melodic)
    toks = run_grammar(config, choices, 600)
    piece, report = decode_tokens(toks)
    assert report.dropped == 0 and report.notes == len(toks) // 3
    trip = np.asarray(toks, dtype=np.int64).reshape(-1, 3)
    if not len(trip):
        return
    times = trip[:, 0]
    assert np.all(np.diff(times) >= 0)
    inst = (trip[:, 2] - vocab.NOTE_OFFSET) // 128
    if instruments is not None:
        assert set(inst.tolist()) <= instruments
    assert len(set(inst.tolist()) - {128}) <= max_melodic
    _, per_onset = np.unique(times, return_counts=True)
    assert per_onset.max() <= cap
    assert np.all(trip[:, 1] - vocab.DUR_OFFSET >= 1)
    # no (instrument, pitch) twice at one onset
    assert len({(t, n) for t, n in zip(times.tolist(), trip[:, 2].tolist())}) == len(trip)


def test_slot_order_and_rejection():
    g = AmtGrammar()
    assert g.slot == TIME
    with pytest.raises(ValueError):
        g.advance(vocab.DUR_OFFSET + 5)
    g.advance(120)
    assert g.slot == DURATION
    g.advance(vocab.DUR_OFFSET + 50)
    assert g.slot == NOTE
    g.advance(vocab.NOTE_OFFSET + 60)
    lo, _ = g.allowed_range()
    assert lo == 120  # same onset allowed (chords), earlier not
    with pytest.raises(ValueError):
        g.advance(119)


def test_window_end_stops_the_sequence():
    g = AmtGrammar(GrammarConfig(max_time=10, max_notes_per_onset=1))
    for tok in (10, vocab.DUR_OFFSET + 5, vocab.NOTE_OFFSET + 60):
        g.advance(tok)
    assert not g.can_continue()


def test_bad_allow_lists_are_refused():
    with pytest.raises(ValueError):
        GrammarConfig.make([])
    with pytest.raises(ValueError):
        GrammarConfig.make([200])


def test_following_a_context_moves_the_clock_past_long_rests():
    from midilm.codecs.amt.vocab import DUR_OFFSET, NOTE_OFFSET

    g = AmtGrammar(GrammarConfig(max_gap=400))
    # two notes 6 s apart (longer than max_gap), then one of an instrument outside any allow-list
    for t in (0, DUR_OFFSET + 50, NOTE_OFFSET + 60, 600, DUR_OFFSET + 50, NOTE_OFFSET + 62):
        g.follow(t)
    assert g.slot == TIME and g.time == 600 and g.notes == 2
    lo, hi = g.allowed_range()
    assert lo == 600 and hi == 1001  # new onsets start at the context's last one, not before it
