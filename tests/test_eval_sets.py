"""Set metrics of `midilm eval generate`: COSIATEC compression ratio on constructed repetition vs random
notes, polyphony and note density, overlapping areas and Frechet distances on real POP909 songs."""

from __future__ import annotations

import numpy as np
import pytest

from midilm.evaluate.patterns import compression_ratio, cosiatec, point_keys
from midilm.evaluate.sets import (
    compare_distributions,
    encoder_frechet,
    note_density,
    overlap_area,
    piece_features,
    polyphony,
    symbolic_frechet,
)
from midilm.music.midi_io import read_midi
from midilm.music.piece import Piece
from tests.conftest import shared_path

TPB = 480


def piece_of(notes: list[tuple[float, int]], length: float = 0.5, program: int = 0) -> Piece:
    """A piece from (onset in beats, pitch) pairs."""
    start = np.array([round(b * TPB) for b, _ in notes])
    pitch = np.array([p for _, p in notes])
    n = len(notes)
    return Piece(TPB, start, start + int(length * TPB), pitch, np.full(n, 80), np.full(n, program), np.zeros(n, int))


MOTIF = [(0.0, 60), (0.5, 62), (1.0, 64), (1.5, 65), (2.0, 67), (3.0, 64)]


def repeated_motif(times: int = 10) -> Piece:
    # the motif every 4 beats, transposed up and down: one TEC of 6 points and 10 translators
    shifts = [0, 5, -3, 7, 2, 0, 5, -3, 7, 2][:times]
    return piece_of([(b + 4 * k, p + shifts[k]) for k in range(times) for b, p in MOTIF])


def test_compression_ratio_finds_the_repeated_motif():
    cover = cosiatec(point_keys(repeated_motif()))
    assert cover.points == 60
    assert cover.ratio == pytest.approx(60 / (6 + 10 - 1))  # the whole piece is one TEC
    assert sorted(cover.tecs[0][:2]) == [6, 10]  # the motif x 10 places, or its conjugate: 10 points x 6


def test_repetition_compresses_better_than_random_notes():
    rng = np.random.default_rng(0)
    ratios = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        notes = [(float(b) / 2, int(p)) for b, p in zip(rng.choice(400, 60, replace=False), rng.integers(48, 84, 60))]
        ratios.append(compression_ratio(piece_of(notes)))
    assert compression_ratio(repeated_motif()) > 3.5 > 1.6 > max(ratios)
    assert min(ratios) >= 1.0  # never below: the residue encodes itself
    assert compression_ratio(piece_of([(0.0, 60)])) is None


def test_drums_are_not_points():
    drums = piece_of([(b / 2, 36) for b in range(16)], program=128)
    assert len(point_keys(drums)) == 0


def test_caps_bound_the_work():
    cover = cosiatec(point_keys(repeated_motif()), max_points=20)
    assert cover.points == 20 and cover.truncated


def test_polyphony_and_density():
    chords = piece_of([(b, p) for b in range(8) for p in (60, 64, 67)], length=1.0)  # 3 notes sounding, 1 per beat
    assert polyphony(chords) == pytest.approx(3.0)
    assert note_density(chords) == pytest.approx(24 / 4.0)  # 8 beats at 120 bpm = 4 s
    assert polyphony(piece_of([(b, 60) for b in range(8)], length=1.0)) == pytest.approx(1.0)


def test_overlap_area():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 200).tolist()
    assert overlap_area(a, a) == pytest.approx(1.0, abs=1e-3)  # the KDE tails past the grid are lost
    assert overlap_area(a, (np.array(a) + 10).tolist()) < 0.01
    assert 0.3 < overlap_area(a, (np.array(a) + 1).tolist()) < 0.9
    assert overlap_area([1.0], a) is None


def test_set_metrics_on_real_songs(tmp_path):
    root = shared_path("pop909", "POP909")
    songs = [read_midi(root / f"{n:03d}" / f"{n:03d}.mid") for n in (10, 20, 30, 40)]
    feats = [piece_features(s) for s in songs]
    for f in feats:
        assert 1.0 < f["polyphony"] < 6 and 1 < f["note_density"] < 30
        assert f["compression_ratio"] > 1.2  # pop songs repeat
    # a set against itself: full overlap, zero distance; against shuffled pitch classes: far
    itself = symbolic_frechet(feats, feats)
    assert itself["value"] == pytest.approx(0.0, abs=1e-6)  # rounding of the eigen-decompositions only
    # 4 songs in 24 dimensions: singular covariances, so the report says the value is only indicative
    assert itself["small_sets"] is True and "indicative only: 4 generated and 4 reference pieces" in itself["note"]
    same = compare_distributions(feats, feats)
    assert all(v["overlap_area"] == pytest.approx(1.0, abs=1e-3) for v in same.values())
    random_feats = [piece_features(piece_of([(b / 4, int(p)) for b, p in enumerate(
        np.random.default_rng(k).integers(30, 100, 300))])) for k in range(4)]
    far = symbolic_frechet(random_feats, feats)
    assert far["value"] > 10 and far["small_sets"] is True
    assert "no MIDI encoder" in encoder_frechet(songs, songs, tmp_path / "absent")["note"]


def scale_run(bars: int, seed: int, spread: int) -> Piece:
    """A few bars of a random walk over the C major scale (`spread` sets how far it wanders)."""
    rng = np.random.default_rng(seed)
    steps = np.cumsum(rng.integers(-spread, spread + 1, 4 * bars))
    scale = np.array([0, 2, 4, 5, 7, 9, 11])
    return piece_of([(b, int(60 + 12 * (s // 7) + scale[s % 7])) for b, s in enumerate(steps)])


def test_symbolic_frechet_on_tiny_and_large_sets():
    small = [piece_features(scale_run(4, k, 1), with_compression=False) for k in range(30)]
    wide = [piece_features(scale_run(4, 100 + k, 4), with_compression=False) for k in range(30)]
    # 2 pieces a side in 24 dimensions: rank-1 covariances, yet a finite distance, flagged as indicative
    tiny = symbolic_frechet(small[:2], wide[:2])
    assert tiny["value"] is not None and tiny["value"] > 0 and tiny["small_sets"] is True
    assert "2 generated and 2 reference pieces for 24 dimensions" in tiny["note"]
    # identical pieces (a degenerate set: zero covariance) against themselves: zero
    same = [small[0], small[0], small[0]]
    assert symbolic_frechet(same, same)["value"] == pytest.approx(0.0, abs=1e-9)  # rounding only
    # 30 pieces a side > 24 dimensions: no flag, and narrow walks are far from wide ones but near each other
    large = symbolic_frechet(small, wide)
    assert large["small_sets"] is False and "indicative" not in large["note"]
    near = symbolic_frechet(small[:15], small[15:])
    assert large["value"] > 2 * near["value"] > 0
    assert symbolic_frechet(small[:1], wide)["value"] is None  # one piece has no spread at all


def test_audio_metrics_skip_with_reasons(tmp_path):
    from midilm.evaluate.audio import audio_metrics

    ckpt = tmp_path / "music_audioset.pt"
    ckpt.write_bytes(b"not a checkpoint")
    out = audio_metrics(tmp_path, [{"id": "a", "prompt": "x"}], None, clap_model=tmp_path / "missing.pt",
                        fad_model=ckpt)
    assert out["clap"] is None and out["fad"] is None
    assert any(n.startswith("clap skipped:") and "is not a file" in n for n in out["notes"])
    # laion-clap is not a dependency: without it (or with a file it cannot load) FAD says why
    assert any(n.startswith("fad skipped: the model did not load") for n in out["notes"])
