"""The flat analysis dict of analyze.py, its clip windows, and its words, on real files from ../shared/data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from midilm.music.midi_io import read_midi
from midilm.music.piece import Piece
from midilm.music.tempo import TempoMap

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CONTRACT_KEYS = {
    "duration", "duration_word", "bpm", "bpm_source", "tempo_word", "tempo_word_simple", "time_signature",
    "time_signature_source", "key", "key_tonic", "mode", "key_confidence", "key_segments", "chords",
    "chord_pattern", "chord_pattern_count", "instruments", "instrument_words", "families", "has_drums",
    "n_tracks", "n_notes", "texture", "note_density", "polyphony", "max_polyphony", "pitch_low", "pitch_high",
    "pitch_range_semitones", "register", "dynamics", "velocity_mean", "velocity_std", "articulation",
    "syncopation", "swing", "note_value", "contour",
}  # fmt: skip


def _module():
    """The analyze module, or a skip naming why (it imports harmony.py, written by another engineer)."""
    try:
        from midilm.annotate import analyze
    except ImportError as e:
        pytest.skip(f"analyze.py needs harmony.py: {e}")
    return analyze


def _analyze():
    """The analyze module where harmony.py already has the functions a full analysis calls."""
    analyze = _module()
    harmony = analyze.harmony
    missing = [f for f in ("estimate_key", "key_segments", "estimate_chords", "chord_pattern")
               if not hasattr(harmony, f)]
    if missing:
        pytest.skip(f"harmony.py does not define {', '.join(missing)} yet")
    return analyze


def data(*parts: str) -> Path:
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not available (needs ../shared/data)")
    return p


def synthetic(seconds: float, bpm: float = 120.0, pitches: tuple[int, ...] = (60,), velocity: int = 80,
              program: int = 0, gate: float = 1.0) -> Piece:
    """Quarter notes (each chord of `pitches`) filling `seconds` at `bpm`."""
    tpb = 480
    n = int(round(seconds * bpm / 60.0))
    starts = np.repeat(np.arange(n) * tpb, len(pitches))
    pitch = np.tile(np.array(pitches), n)
    k = len(starts)
    return Piece(tpb, starts, starts + int(tpb * gate), pitch, np.full(k, velocity), np.full(k, program),
                 np.zeros(k, dtype=np.int64), tempo_map=TempoMap.constant(bpm, tpb))


def _walk(value, path="") -> None:
    """Every leaf is str, int, float (finite) or bool, inside lists and dicts with str keys."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str), path
            _walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk(v, f"{path}[{i}]")
    else:
        assert type(value) in (str, int, float, bool), f"{path}: {type(value)}"
        if isinstance(value, float):
            assert math.isfinite(value), path


def test_clip_windows_of_a_15_second_piece() -> None:
    analyze = _module()
    piece = synthetic(15.0)
    windows = analyze.clip_windows(piece)
    assert len(windows) == 1
    name, start, end = windows[0]
    assert name == "start" and start == 0.0 and end == pytest.approx(piece.duration)


def test_clip_windows_of_longer_pieces() -> None:
    analyze = _module()
    thirty = analyze.clip_windows(synthetic(30.0))
    assert [w[0] for w in thirty] == ["start", "end"]
    assert thirty[0][1] == 0.0 and thirty[1][2] == pytest.approx(30.0, abs=0.6)
    long = analyze.clip_windows(synthetic(100.0))
    assert [w[0] for w in long] == ["start", "middle", "end"]
    assert all(b - a == pytest.approx(20.0) for _, a, b in long)
    assert long[1][1] == pytest.approx((100.0 - 20.0) / 2, abs=0.6)
    assert analyze.clip_windows(Piece(480, *(np.zeros(0, dtype=np.int64),) * 6)) == []


@pytest.mark.parametrize(("velocity", "word"), [(33, "pp"), (40.9, "pp"), (41, "p"), (57, "mp"), (72, "mf"),
                                                (88, "f"), (103.9, "f"), (104, "ff"), (127, "ff")])
def test_dynamics_words_at_bin_edges(velocity: float, word: str) -> None:
    assert _module().dynamics_word(velocity) == word


def test_pitch_names() -> None:
    analyze = _module()
    assert [analyze.pitch_name(p) for p in (21, 60, 61, 70, 108)] == ["A0", "C4", "C#4", "Bb4", "C8"]


def test_synthetic_piece_features() -> None:
    analyze = _analyze()
    mono = analyze.analyze_piece(synthetic(30.0, pitches=(60,), velocity=40, gate=0.4))
    assert mono["texture"] == "monophonic" and mono["articulation"] == "staccato" and mono["dynamics"] == "pp"
    assert mono["bpm"] == 120.0 and mono["bpm_source"] == "tempo map" and mono["note_value"] == "quarter notes"
    chords = analyze.analyze_piece(synthetic(30.0, pitches=(48, 52, 55, 60), velocity=110))
    assert chords["texture"] == "homophonic" and chords["dynamics"] == "ff" and chords["max_polyphony"] == 4
    assert chords["polyphony"] == pytest.approx(4.0) and chords["articulation"] == "legato"
    assert chords["pitch_low"] == "C3" and chords["pitch_high"] == "C4" and chords["pitch_range_semitones"] == 12


def test_pop909_song_full_analysis_is_flat_and_json_serialisable() -> None:
    analyze = _analyze()
    piece = read_midi(data("pop909", "POP909", "001", "001.mid"))
    meta = {"title": "t", "source": "POP909", "license": "MIT", "ignored": object()}
    whole, clips = analyze.analyze_with_clips(piece, meta)
    assert set(whole) >= CONTRACT_KEYS
    assert whole["title"] == "t" and whole["source"] == "POP909" and "ignored" not in whole
    assert whole["instruments"] == ["Acoustic Grand Piano"] and whole["has_drums"] is False
    assert whole["n_tracks"] == 3 and whole["n_notes"] == len(piece)
    assert whole["bpm"] == pytest.approx(90.0) and whole["tempo_word"] == "Moderato"
    assert whole["duration_word"] == "song" and whole["texture"] == "homophonic"
    assert whole["key_tonic"] in whole["key"] and whole["mode"] in ("major", "minor")
    assert all(set(c) >= {"start", "end", "label"} for c in whole["chords"])
    assert all(0.0 <= c["start"] < c["end"] <= whole["duration"] for c in whole["chords"] + whole["key_segments"])
    assert [c["clip"] for c in clips] == ["start", "middle", "end"]
    for c in clips:
        assert set(c) >= CONTRACT_KEYS and c["duration"] == pytest.approx(20.0)
        assert 0 < c["n_notes"] < whole["n_notes"]
        # chord times are relative to the clip
        assert c["chords"] and all(0.0 <= ch["start"] < ch["end"] <= 20.0 for ch in c["chords"])
    text = json.dumps({"piece": whole, "clips": clips})
    _walk(json.loads(text))
    assert clips == analyze.analyze_clips(piece, meta)


def test_drums_and_many_instruments() -> None:
    analyze = _analyze()
    a = analyze.analyze_piece(read_midi(data("fixtures", "MIDIs_multitrack", "Funkytown.mid")))
    assert a["has_drums"] is True and "Drums" in a["families"] and "drums" in a["instrument_words"]
    assert len(a["instruments"]) >= 5 and a["n_tracks"] >= 5


def test_melody_only_folk_tune_is_monophonic() -> None:
    analyze = _analyze()
    a = analyze.analyze_piece(read_midi(data("nottingham", "MIDI", "melody", "jigs1.mid")))
    assert a["texture"] == "monophonic" and a["max_polyphony"] == 1
    assert a["time_signature"] == "6/8" and a["note_value"] == "eighth notes"


def test_performance_gets_estimated_tempo() -> None:
    analyze = _analyze()
    a = analyze.analyze_piece(read_midi(data("fixtures", "MIDIs_one_track", "Maestro_3.mid")))
    assert a["bpm_source"] == "estimated" and a["bpm"] != 120.0
    json.dumps(a)
