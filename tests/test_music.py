"""Reading and writing MIDI: every fixture, awkward content, clear errors naming the file."""

from __future__ import annotations

import glob

import numpy as np
import pytest

from midilm.errors import MidiReadError
from midilm.music.examples import example_piece
from midilm.music.gm import program_from_word, programs_in_text
from midilm.music.midi_io import midi_bytes, read_midi, write_midi
from midilm.music.piece import key_name
from midilm.music.tempo import TempoMap
from tests.conftest import SHARED_DATA, shared_path

GOOD_FIXTURES = [
    f for f in sorted(glob.glob(str(SHARED_DATA / "fixtures" / "**" / "*.mid"), recursive=True))
    if "corrupted" not in f and not f.endswith("empty.mid")
]


def _notes(piece) -> list[tuple]:
    return sorted(zip(piece.start_tick.tolist(), piece.end_tick.tolist(), piece.pitch.tolist(),
                      piece.program.tolist(), piece.velocity.tolist()))


@pytest.mark.parametrize("path", GOOD_FIXTURES or ["missing"])
def test_every_fixture_reads_and_round_trips(path, tmp_path):
    if path == "missing":
        shared_path("fixtures")
    piece = read_midi(path)
    assert len(piece) > 0 and piece.path == path
    assert np.all(np.diff(piece.start_tick) >= 0)
    assert np.all(piece.end >= piece.start) and piece.duration > 0
    out = write_midi(piece, tmp_path / "out.mid")
    back = read_midi(out)
    assert _notes(back) == _notes(piece)
    assert np.allclose(back.tempo_map.seconds(back.start_tick), piece.start, atol=1e-6)


def test_tempo_changes_give_seconds_and_beats():
    piece = read_midi(shared_path("fixtures", "MIDIs_multitrack", "What a Fool Believes.mid"))
    # seconds follow the tempo map, beats do not depend on it
    tm = piece.tempo_map
    assert np.allclose(piece.start_beat, piece.start_tick / piece.ticks_per_beat)
    assert np.allclose(tm.ticks_at(piece.start), piece.start_tick, atol=1e-6)


def test_drums_multitrack_and_program_names():
    piece = read_midi(shared_path("fixtures", "MIDIs_multitrack", "Funkytown.mid"))
    assert 128 in piece.programs
    assert "Drums" in piece.instrument_names()
    assert len(set(piece.program.tolist())) >= 5


@pytest.mark.parametrize("parts,match", [
    (("fixtures", "MIDIs_corrupted", "ValueError_Control168.mid"), "ValueError_Control168.mid.*data byte"),
    (("fixtures", "MIDIs_one_track", "empty.mid"), "empty.mid.*no notes"),
])
def test_bad_fixtures_raise_one_clear_error(parts, match):
    with pytest.raises(MidiReadError, match=match):
        read_midi(shared_path(*parts))


def test_empty_file_is_allowed_when_asked():
    piece = read_midi(shared_path("fixtures", "MIDIs_one_track", "empty.mid"), allow_empty=True)
    assert len(piece) == 0 and piece.duration == 0.0


def test_truncated_zero_byte_and_non_midi_files(tmp_path):
    data = midi_bytes(example_piece())
    cases = {"truncated.mid": data[: len(data) // 2], "zero.mid": b"", "text.mid": b"hello, not midi at all"}
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(MidiReadError, match=name):
            read_midi(p)
    with pytest.raises(MidiReadError, match="no such file"):
        read_midi(tmp_path / "missing.mid")


def test_overlapping_and_zero_length_notes_survive(tmp_path):
    piece = example_piece()
    n = len(piece)
    start = np.r_[piece.start_tick, 0, 100, 200]
    end = np.r_[piece.end_tick, 400, 300, 200]  # two overlapping C4s, one zero-length note
    extra = lambda arr, v: np.r_[arr, [v] * 3]  # noqa: E731
    from midilm.music.piece import Piece

    p2 = Piece(piece.ticks_per_beat, start, end, extra(piece.pitch, 60), extra(piece.velocity, 90),
               extra(piece.program, 0), extra(piece.track, 0), tracks=piece.tracks, tempo_map=piece.tempo_map)
    back = read_midi(midi_bytes(p2))
    assert len(back) >= n + 2  # symusic keeps overlaps; a zero-length note may be dropped by readers


def test_key_names_and_tempo_map():
    assert key_name(-3, False) == "Eb major" and key_name(3, True) == "F# minor" and key_name(0, True) == "A minor"
    tm = TempoMap.from_changes(480, [(0, 500000), (960, 1000000)])
    assert np.allclose(tm.seconds([0, 960, 1440]), [0.0, 1.0, 2.0])
    assert np.allclose(tm.ticks_at([0.5, 1.5]), [480, 1200])


def test_instrument_words():
    assert program_from_word("violins") == 40 and program_from_word("drums") == 128
    assert programs_in_text("Piano and string ensemble with electric bass and drums") == [0, 48, 33, 128]
    with pytest.raises(ValueError, match="kazoo-tuba"):
        program_from_word("kazoo-tuba")


def test_transposed_piece_moves_pitches_and_key_but_not_drums():
    from midilm.annotate.analyze import analyze_piece
    from midilm.music.piece import shift_key_signature, shift_pitches
    from midilm.train.augment import shift_key

    piece = example_piece()
    up = piece.transposed(3)

    def notes(p, shift):  # (start, end, program, pitch class moved by `shift`, drum pitch as is)
        return sorted(zip(p.start_tick.tolist(), p.end_tick.tolist(), p.program.tolist(),
                          [x if prog == 128 else (x + shift) % 12 for x, prog in zip(p.pitch.tolist(),
                                                                                   p.program.tolist())]))

    assert (piece.program == 128).any() and notes(up, 0) == notes(piece, 3) != notes(piece, 0)
    # the analysis of the moved notes names the moved key
    assert analyze_piece(up)["key"] == shift_key(analyze_piece(piece)["key"], 3)
    # pitches pushed out of range come back by octaves, keeping their pitch class
    assert shift_pitches(np.array([125, 2]), 5).tolist() == [118, 7]
    assert shift_pitches(np.array([125, 2]), -5).tolist() == [120, 9]
    # key signatures move round the circle of fifths: C -> D (2 sharps), F (-1) -> Eb (-3), A minor (0) -> B minor
    assert [shift_key_signature(0, 2), shift_key_signature(-1, -2), shift_key_signature(0, 2)] == [2, -3, 2]
    assert shift_key_signature(5, 1) == 0  # B major up a semitone is C major
