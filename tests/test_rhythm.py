"""Tempo, beats, meter and words from rhythm.py, on real files from ../shared/data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from midilm.annotate.rhythm import (
    analyze_rhythm,
    duration_word,
    estimate_beats,
    estimate_meter,
    estimate_tempo,
    grid_alignment,
    tempo_word,
    tempo_word_simple,
)
from midilm.music.midi_io import read_midi
from midilm.music.piece import Piece

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def data(*parts: str) -> Path:
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not available (needs ../shared/data)")
    return p


def stretched(piece: Piece, factor: float) -> Piece:
    """The same notes played `factor` times slower (ticks scaled, tempo map unchanged)."""
    return Piece(piece.ticks_per_beat, np.round(piece.start_tick * factor).astype(np.int64),
                 np.round(piece.end_tick * factor).astype(np.int64), piece.pitch, piece.velocity, piece.program,
                 piece.track, tracks=list(piece.tracks), tempo_map=piece.tempo_map,
                 time_signatures=list(piece.time_signatures))


@pytest.mark.parametrize(("bpm", "word"), [
    (39.99, "Grave"), (40, "Largo"), (59.99, "Largo"), (60, "Adagio"), (70, "Andante"), (90, "Moderato"),
    (110, "Allegro"), (139.9, "Allegro"), (140, "Vivace"), (160, "Presto"), (209.9, "Presto"),
    (210, "Prestissimo"),
])
def test_tempo_word_bin_edges(bpm: float, word: str) -> None:
    assert tempo_word(bpm) == word


@pytest.mark.parametrize(("bpm", "word"), [(79.9, "Slow"), (80, "Moderate"), (119.9, "Moderate"), (120, "Fast"),
                                           (159.9, "Fast"), (160, "Very fast")])
def test_tempo_word_simple_bin_edges(bpm: float, word: str) -> None:
    assert tempo_word_simple(bpm) == word


@pytest.mark.parametrize(("seconds", "word"), [(0, "short fragment"), (29.9, "short fragment"), (30, "short song"),
                                               (119.9, "short song"), (120, "song"), (299, "song"),
                                               (300, "long piece")])
def test_duration_word_bin_edges(seconds: float, word: str) -> None:
    assert duration_word(seconds) == word


def test_maestro_tempo_is_estimated_and_scales_with_time_stretch() -> None:
    piece = read_midi(data("fixtures", "MIDIs_one_track", "Maestro_2.mid"))
    assert piece.bpm == 120.0  # what the file claims, meaningless for a performance
    assert grid_alignment(piece) < 0.5
    bpm, source = estimate_tempo(piece)
    assert source == "estimated"
    assert abs(bpm - 120.0) > 2.0 and 40 <= bpm <= 220
    slower, _ = estimate_tempo(stretched(piece, 1.25))
    faster, _ = estimate_tempo(stretched(piece, 0.8))
    assert slower == pytest.approx(bpm / 1.25, rel=0.03)
    assert faster == pytest.approx(bpm * 1.25, rel=0.03)


def test_performance_beats_follow_the_estimated_tempo() -> None:
    piece = read_midi(data("fixtures", "MIDIs_one_track", "Maestro_2.mid"))
    r = analyze_rhythm(piece)
    spacing = float(np.median(np.diff(r.beat_times)))
    assert spacing == pytest.approx(60.0 / r.bpm, rel=0.1)
    assert r.beat_times[0] <= piece.start.min() + 1.0 and r.beat_times[-1] >= piece.start.max() - 2 * spacing


def test_quantised_file_keeps_its_tempo_map() -> None:
    piece = read_midi(data("pop909", "POP909", "001", "001.mid"))
    bpm, source = estimate_tempo(piece)
    assert source == "tempo map" and bpm == pytest.approx(piece.bpm, rel=1e-3)


def _nottingham_rows(tune_type: str, meter: str) -> list[dict]:
    with open(data("nottingham", "index.csv"), newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if r["tune_type"] == tune_type and r["meter"] == r["all_meters"] == meter]


@pytest.mark.parametrize(("tune_type", "meter"), [("waltzes", "3/4"), ("jigs", "6/8"), ("reels", "4/4")])
def test_nottingham_meter_from_file_and_from_the_notes_alone(tune_type: str, meter: str) -> None:
    rows = _nottingham_rows(tune_type, meter)[:10]
    assert len(rows) == 10
    right = 0
    for row in rows:
        piece = read_midi(data("nottingham", row["midi_full"]))
        assert estimate_meter(piece) == (meter, "file")
        guess, source = estimate_meter(piece, trust_file=False)
        assert source == "estimated"
        right += guess == meter
    # the estimator alone is wrong now and then (a jig read as 9/8); it must be right on most
    assert right >= 8


def test_pop909_wrong_one_four_signature_is_not_trusted() -> None:
    piece = read_midi(data("pop909", "POP909", "022", "022.mid"))
    assert str(piece.time_signature) == "1/4"
    meter, source = estimate_meter(piece)
    assert source == "estimated" and meter in ("2/4", "4/4")


def test_pop909_triple_song_is_found_triple() -> None:
    song = data("pop909", "POP909", "034")
    piece = read_midi(song / "034.mid")
    down = np.loadtxt(song / "beat_midi.txt")[:, 1]
    assert np.bincount(np.diff(np.flatnonzero(down == 1))).argmax() == 3  # the label: 3 beats per bar
    assert estimate_meter(piece) == ("3/4", "estimated")


def test_pop909_beats_match_the_annotated_beats() -> None:
    song = data("pop909", "POP909", "001")
    piece = read_midi(song / "001.mid")
    beats, downbeats = estimate_beats(piece)
    truth = np.loadtxt(song / "beat_midi.txt")[:, 0]
    assert len(beats) == len(downbeats) and downbeats.dtype == bool and downbeats.any()
    inside = truth[(truth > beats[0]) & (truth < beats[-1])]
    nearest = np.abs(beats[np.searchsorted(beats, inside).clip(0, len(beats) - 1)] - inside)
    nearest = np.minimum(nearest, np.abs(beats[(np.searchsorted(beats, inside) - 1).clip(0)] - inside))
    assert np.median(nearest) < 0.05
    assert np.median(np.diff(beats)) == pytest.approx(np.median(np.diff(truth)), rel=0.02)


def test_empty_and_tiny_pieces_do_not_fail() -> None:
    z = np.zeros(0, dtype=np.int64)
    empty = Piece(480, z, z, z, z, z, z)
    assert estimate_tempo(empty)[0] == 120.0
    assert estimate_meter(empty) == ("4/4", "estimated")
    one = Piece(480, np.array([0]), np.array([480]), np.array([60]), np.array([80]), np.array([0]), np.array([0]))
    r = analyze_rhythm(one)
    assert r.bpm == 120.0 and r.meter == "4/4"
