"""The AMT decoder never fails, repairs what it must and says so; controls, grids and merged vocabularies."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midilm.codecs.amt import vocab
from midilm.codecs.amt.decode import decode_tokens
from midilm.codecs.amt.encode import encode_midi
from midilm.codecs.amt.lines import anticipate, as_controls, pad_rests, split_instruments, training_lines
from midilm.music.examples import example_piece
from midilm.music.midi_io import midi_bytes, read_midi
from midilm.music.smf import NOTE_ON, scan_smf


def note(t: int, d: int, instr: int, pitch: int) -> list[int]:
    return [t, vocab.DUR_OFFSET + d, vocab.NOTE_OFFSET + 128 * instr + pitch]


def _valid_midi(piece) -> bytes:
    data = midi_bytes(piece)
    scan_smf(data)  # our strict scanner accepts it
    back = read_midi(data, allow_empty=True)
    assert len(back) == len(piece)
    return data


ids_anything = st.lists(
    st.one_of(
        st.integers(0, vocab.VOCAB_SIZE - 1),  # any AMT id, any slot
        st.integers(-5, 300_000),  # text ids of a merged vocabulary, negatives, junk
        st.sampled_from([vocab.SEPARATOR, vocab.AUTOREGRESS, vocab.ANTICIPATE, vocab.REST]),
    ),
    max_size=400,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ids_anything)
def test_any_ids_give_a_valid_midi_file(ids):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        piece, report = decode_tokens(ids)
    _valid_midi(piece)
    assert report.notes == len(piece) + report.notes_dropped_instruments
    assert report.tokens == len(ids)
    melodic = {int(p) for p in piece.program if p != vocab.DRUMS}
    assert len(melodic) <= 15


well_formed = st.lists(
    st.tuples(st.integers(0, 9999), st.integers(0, 999), st.integers(0, 128), st.integers(0, 127)),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(well_formed, st.integers(0, 3))
def test_truncation_loses_at_most_the_cut_event(events, cut):
    ids = [x for t, d, i, p in events for x in note(t, d, i, p)]
    full, _ = decode_tokens(ids, max_melodic=200)
    cut_ids = ids[: max(len(ids) - cut, 0)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        part, report = decode_tokens(cut_ids, max_melodic=200)
    assert len(part) == len(full) - (1 if cut and events else 0)
    assert report.incomplete_events == (1 if cut in (1, 2) and events else 0)


def test_misplaced_and_text_ids_are_dropped_and_counted():
    ids = [vocab.AUTOREGRESS] + note(0, 50, 0, 60) + [5, 128000] + note(100, 50, 0, 62)
    ids += [vocab.DUR_OFFSET + 10, vocab.NOTE_OFFSET + 64]  # duration and note with no time
    ids += [200, vocab.NOTE_OFFSET + 65]  # time then note: duration missing
    piece, report = decode_tokens(ids)
    assert piece.pitch.tolist() == [60, 62]
    assert report.text_or_unknown_ids == 1 and report.incomplete_events >= 1 and report.misplaced_ids >= 1
    assert report.dropped > 0 and "dropped" in report.summary()


def test_times_going_backwards_and_absurd_values_still_decode():
    ids = note(500, 999, 0, 60) + note(100, 0, 0, 61) + note(9999, 999, 128, 36)
    piece, report = decode_tokens(ids)
    assert sorted(piece.pitch.tolist()) == [36, 60, 61]
    assert piece.start.min() >= 0 and report.dropped == 0


def test_merged_llm_vocabulary():
    amt = note(0, 25, 40, 67) + note(50, 25, 40, 69)
    llm = [128000, 9906] + vocab.to_llm_ids([vocab.AUTOREGRESS] + amt)
    assert vocab.to_llm_id(vocab.AUTOREGRESS) == 128256 + 55026
    assert vocab.from_llm_ids(llm) == [vocab.AUTOREGRESS] + amt
    piece, report = decode_tokens(llm, text_vocab_size=vocab.LLAMA3_TEXT_VOCAB)
    assert piece.program.tolist() == [40, 40] and report.text_or_unknown_ids == 2


def test_bar_grid_tempo_meter_and_velocities():
    # four quarter notes at 90 bpm: onsets every 2/3 s
    ids = [x for k in range(4) for x in note(round(k * 200 / 3), 30, 0, 60 + k)]
    piece, _ = decode_tokens(ids, bpm=90, time_signature=(3, 4), velocities=[10, 20, 30, 40])
    data = _valid_midi(piece)
    back = read_midi(data)
    assert abs(back.bpm - 90) < 0.01 and str(back.time_signature) == "3/4"
    assert back.start_beat.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert back.velocity.tolist() == [10, 20, 30, 40]


def test_more_than_15_melodic_instruments_merge_or_drop_with_warning():
    ids = []
    programs = list(range(0, 128, 6))[:20]  # 20 instruments in 16 families
    for k, prog in enumerate(programs):
        ids += note(k * 10, 20, prog, 60)
    ids += note(0, 10, 128, 36)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        piece, report = decode_tokens(ids)
    assert any("melodic instruments" in str(w.message) for w in caught)
    melodic = set(piece.program.tolist()) - {128}
    assert len(melodic) == 15 and 128 in piece.program.tolist()
    assert len(report.instruments_merged) + len(report.instruments_dropped) == 5
    ev = scan_smf(midi_bytes(piece))
    on = ev.kind == NOTE_ON
    channel_of_drums = set(ev.channel[on][ev.d1[on] == 36].tolist())
    assert channel_of_drums == {9}
    # 15 melodic instruments on 15 distinct channels, none on channel 10
    assert len(set(ev.channel[on].tolist()) - {9}) == 15


def test_round_trip_of_the_example_piece():
    piece = example_piece()
    tokens = encode_midi(midi_bytes(piece))
    decoded, report = decode_tokens(tokens, bpm=100, velocities=None)
    assert report.dropped == 0
    assert len(decoded) == len(piece)
    assert np.allclose(np.sort(decoded.start), np.sort(piece.start), atol=0.006)
    assert sorted(decoded.program.tolist()) == sorted(piece.program.tolist())


def test_accompaniment_controls_are_interleaved_ahead_and_folded_back():
    piece = example_piece()
    events = encode_midi(midi_bytes(piece))
    rest, melody_controls = split_instruments(events, [33])  # the bass becomes the given part
    assert all(t >= vocab.CONTROL_OFFSET for t in melody_controls)
    tokens, left = anticipate(pad_rests(rest), melody_controls)
    assert not left
    # each control appears before the first event later than its time minus 5 s
    seen_event_time = 0
    for time, _, n in zip(tokens[0::3], tokens[1::3], tokens[2::3]):
        if n >= vocab.CONTROL_OFFSET:
            assert seen_event_time <= time - vocab.ATIME_OFFSET - vocab.DELTA + vocab.DELTA
            assert seen_event_time >= 0
        else:
            seen_event_time = time
    decoded, report = decode_tokens([vocab.ANTICIPATE] + tokens, bpm=100)
    assert len(decoded) == len(piece) and report.controls_folded == len(melody_controls) // 3


def test_as_controls_and_augmented_lines():
    events = encode_midi(midi_bytes(example_piece()))
    assert as_controls(events[:3])[0] == events[0] + vocab.CONTROL_OFFSET
    long_events = []
    for k in range(12):  # 12 copies laid end to end: over 100 notes and 10 s
        long_events += [t + k * 2000 if i % 3 == 0 else t for i, t in enumerate(events)]
    lines = list(training_lines([long_events], augment_factor=10, seed=1))
    assert lines and all(len(x) == 1024 for x in lines)
    flags = {x[0] for x in lines}
    assert flags == {vocab.AUTOREGRESS, vocab.ANTICIPATE}
    assert any(any(t >= vocab.CONTROL_OFFSET and t < vocab.SPECIAL_OFFSET for t in x) for x in lines)
