"""Keys, key segments, chords and chord patterns on real POP909 and Nottingham files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from midilm.annotate import harmony, harmony_eval
from midilm.music.midi_io import read_midi
from midilm.music.piece import Piece, empty_piece

HARTE = re.compile(r"^(N|(C|C#|D|Eb|E|F|F#|G|Ab|A|Bb|B):(maj|min|7|maj7|min7|dim|aug|sus4|sus2))$")


@pytest.fixture
def data_dir() -> Path:
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.exists():
        pytest.skip(f"{path} not available (tests that need shared/data skip without it)")
    return path


def pop909(data_dir: Path, number: int) -> Piece:
    return read_midi(data_dir / "pop909" / "POP909" / f"{number:03d}" / f"{number:03d}.mid")


def transposed(piece: Piece, semitones: int) -> Piece:
    shifted = piece.select(np.ones(len(piece), dtype=bool))
    tonal = shifted.program != 128
    shifted.pitch = np.where(tonal, shifted.pitch + semitones, shifted.pitch)
    return shifted


@pytest.mark.parametrize(("number", "tonic", "mode"),
                         [(1, "F#", "major"), (4, "Eb", "minor"), (45, "E", "major")])
def test_known_pop909_keys(data_dir: Path, number: int, tonic: str, mode: str) -> None:
    key = harmony.estimate_key(pop909(data_dir, number))
    assert (key.tonic, key.mode) == (tonic, mode)  # 001 is labelled Gb:maj: one spelling for the project
    assert key.name == f"{tonic} {mode}"
    assert key.tonic_pc == harmony.PC_NAMES.index(tonic)
    assert 0.3 < key.confidence <= 1.0


@pytest.mark.parametrize(("tune", "name"), [("ashover1.mid", "G major"), ("ashover2.mid", "D major")])
def test_known_nottingham_keys(data_dir: Path, tune: str, name: str) -> None:
    assert harmony.estimate_key(read_midi(data_dir / "nottingham" / "MIDI" / tune)).name == name


@pytest.mark.parametrize("semitones", [1, 5, -3])
def test_transposition_moves_key_and_chords(data_dir: Path, semitones: int) -> None:
    piece = pop909(data_dir, 45)
    key, moved = harmony.estimate_key(piece), harmony.estimate_key(transposed(piece, semitones))
    assert moved.tonic_pc == (key.tonic_pc + semitones) % 12
    assert moved.mode == key.mode
    roots = [c["label"].split(":")[0] for c in harmony.estimate_chords(piece) if c["label"] != "N"]
    moved_roots = [c["label"].split(":")[0] for c in harmony.estimate_chords(transposed(piece, semitones))
                   if c["label"] != "N"]
    expect = [harmony.PC_NAMES[(harmony.PC_NAMES.index(r) + semitones) % 12] for r in roots]
    assert moved_roots == expect


def test_chords_are_harte_merged_and_ordered(data_dir: Path) -> None:
    piece = pop909(data_dir, 20)
    for beats in (None, np.loadtxt(data_dir / "pop909" / "POP909" / "020" / "beat_midi.txt")[:, 0]):
        chords = harmony.estimate_chords(piece, beats)
        assert len(chords) > 20
        assert all(HARTE.match(c["label"]) for c in chords)
        assert all(c["start"] < c["end"] for c in chords)
        assert all(a["end"] == pytest.approx(b["start"]) for a, b in zip(chords, chords[1:]))
        assert all(a["label"] != b["label"] for a, b in zip(chords, chords[1:]))
        assert chords[0]["start"] < 5 and chords[-1]["end"] > piece.duration - 5


def test_drums_never_count(data_dir: Path) -> None:
    piece = pop909(data_dir, 45)
    rng = np.random.default_rng(0)
    n = 2000
    start = rng.integers(0, int(piece.end_tick.max()), n)
    drums = Piece(piece.ticks_per_beat, np.r_[piece.start_tick, start], np.r_[piece.end_tick, start + 960],
                  np.r_[piece.pitch, rng.integers(35, 82, n)], np.r_[piece.velocity, np.full(n, 100)],
                  np.r_[piece.program, np.full(n, 128)], np.r_[piece.track, np.full(n, 9)],
                  tempo_map=piece.tempo_map)
    assert harmony.estimate_key(drums) == harmony.estimate_key(piece)
    assert harmony.estimate_chords(drums) == harmony.estimate_chords(piece)


def test_key_segments_follow_a_key_change(data_dir: Path) -> None:
    # POP909 010 moves from G major to F minor at 240 s (we find its relative, Ab major)
    piece = pop909(data_dir, 10)
    segments = harmony.key_segments(piece)
    assert segments[0]["key"] == "G major"
    assert len(segments) >= 2 and any(abs(s["start"] - 240) < 15 for s in segments[1:])
    assert all(a["end"] == pytest.approx(b["start"]) for a, b in zip(segments, segments[1:]))
    single = harmony.key_segments(pop909(data_dir, 45))
    assert [s["key"] for s in single] == ["E major"]


def test_analyze_harmony_agrees_with_parts(data_dir: Path) -> None:
    piece = pop909(data_dir, 4)
    out = harmony.analyze_harmony(piece)
    assert out["key"] == harmony.estimate_key(piece).name
    assert out["chords"] == harmony.estimate_chords(piece)
    assert out["key_segments"] == harmony.key_segments(piece)
    assert (out["chord_pattern"], out["chord_pattern_count"]) == harmony.chord_pattern(out["chords"])
    assert 3 <= len(out["chord_pattern"]) <= 5 and out["chord_pattern_count"] >= 2


def test_held_out_key_accuracy(data_dir: Path) -> None:
    assert harmony_eval.key_accuracy_pop909(data_dir, "test", limit=30)["accuracy"] >= 0.8
    assert harmony_eval.key_accuracy_nottingham(data_dir, "test", limit=40)["accuracy"] >= 0.85


def test_held_out_chord_accuracy(data_dir: Path) -> None:
    result = harmony_eval.chord_accuracy_pop909(data_dir, "test", limit=6)
    assert result["n"] == 6
    assert result["accuracy"] >= 0.8


def test_empty_piece() -> None:
    piece = empty_piece()
    assert harmony.estimate_key(piece).confidence == 0.0
    assert harmony.estimate_chords(piece) == []
    assert harmony.key_segments(piece) == []
    assert harmony.chord_pattern([]) == ([], 0)


def test_chord_pattern_counts_without_overlap() -> None:
    seq = ["C:maj", "A:min", "F:maj", "G:maj"] * 3 + ["C:maj", "N", "E:min"]
    assert harmony.chord_pattern(seq) == (["C:maj", "A:min", "F:maj", "G:maj"], 3)
    assert harmony.chord_pattern(["C:maj", "G:maj", "C:maj", "G:maj", "C:maj"]) == ([], 0)  # overlapping
    assert harmony.chord_pattern(["C:maj", "F:maj", "G:maj"]) == ([], 0)
    labels = ["D:min", "G:7", "C:maj7"] * 2
    chords = [{"start": i, "end": i + 1, "label": lab} for i, lab in enumerate(labels)]
    assert harmony.chord_pattern(chords) == (["D:min", "G:7", "C:maj7"], 2)


def test_label_parsing_and_scoring() -> None:
    assert harmony_eval.parse_harte_key("Eb:maj") == (3, 0)
    assert harmony_eval.parse_harte_key("C#:min") == (1, 1)
    assert harmony_eval.parse_abc_key("F#m") == (6, 1)
    assert harmony_eval.parse_abc_key("Ador") == (9, 1)
    assert harmony_eval.parse_abc_key("Gmix") == (7, 0)
    assert harmony_eval.parse_abc_key("Bb") == (10, 0)
    assert harmony_eval.chord_code("F#:maj7/5") == harmony_eval.chord_code("Gb:maj")
    reference = [(0.0, 1.0, "C:maj"), (1.0, 2.0, "A:min7"), (2.0, 3.0, "N"), (3.0, 4.0, "G:sus4")]
    estimate = [{"start": 0.0, "end": 1.0, "label": "C:7"}, {"start": 1.0, "end": 2.0, "label": "C:maj"}]
    ok, scored, ok_n, scored_n = harmony_eval.chord_agreement(reference, estimate)
    assert ok / scored == pytest.approx(0.5, abs=0.01)  # sus4 and N are not scored
    assert ok_n / scored_n == pytest.approx(2 / 3, abs=0.01)  # uncovered time counts as an estimated N
