"""Compare a set of generated pieces with a reference set: per-piece symbolic features, their distributions
(mean, spread and overlapping area of the two densities), and Frechet distances over symbolic feature
vectors and over the MIDI encoder's embeddings (flagged `small_sets`, with a note, when a set has no more
pieces than dimensions: its covariance is then singular and the distance only indicative).

The overlapping area (OA) is the area shared by the two Gaussian kernel density estimates of a feature
(1.0 = same distribution), as in Yang & Lerch's objective evaluation of generated music. The symbolic
Frechet distance is taken after standardising every feature with the mean and standard deviation of both
sets together, so no feature dominates by its unit (the reference set alone can have near-zero spread in a
feature, such as scale consistency of folk tunes, which would blow that feature up). Velocity is left out
of the feature vector: AMT tokens carry none (MIDI-LLM writes every note at 72), so it would only measure the codec.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np

from midilm.evaluate.metrics import frechet_distance, groove_consistency, pitch_class_entropy, scale_consistency

VECTOR_FEATURES = ("pitch_class_entropy", "scale_consistency", "groove_consistency", "polyphony", "note_density",
                   "pitch_mean", "pitch_std", "pitch_range", "duration_beats", "ioi_seconds", "n_instruments",
                   "drum_share")
DISTRIBUTION_FEATURES = ("pitch_class_entropy", "scale_consistency", "groove_consistency", "polyphony",
                         "note_density", "compression_ratio")


def polyphony(piece) -> float:
    """Mean number of sounding pitched notes over the time any pitched note sounds."""
    pitched = piece.program != 128
    start, end = piece.start[pitched], piece.end[pitched]
    if not len(start):
        return 0.0
    times = np.concatenate([start, np.maximum(end, start)])
    delta = np.concatenate([np.ones(len(start)), -np.ones(len(end))])
    order = np.lexsort((delta, times))  # offs before ons at one time: legato is not a chord
    count = np.cumsum(delta[order])[:-1]
    span = np.diff(times[order])
    total = span[count > 0].sum()
    return float((count * span)[count > 0].sum() / total) if total > 0 else float(len(start))


def note_density(piece) -> float:
    """Notes per second between the first onset and the last note-off."""
    if not len(piece):
        return 0.0
    span = float(piece.end.max() - piece.start.min())
    return len(piece) / max(span, 1e-3)


def pitch_class_histogram(piece) -> np.ndarray:
    pitch = piece.pitch[piece.program != 128]
    if not len(pitch):
        return np.zeros(12)
    return np.bincount(pitch % 12, minlength=12) / len(pitch)


def piece_features(piece, with_compression: bool = True) -> dict:
    """Scalar features of one piece (see VECTOR_FEATURES and DISTRIBUTION_FEATURES) and its PC histogram."""
    pitched = piece.program != 128
    pitch = piece.pitch[pitched].astype(float)
    onsets = np.unique(np.round(piece.start, 3))
    out = {
        "n_notes": int(len(piece)),
        "pitch_class_entropy": pitch_class_entropy(piece),
        "scale_consistency": scale_consistency(piece),
        "groove_consistency": groove_consistency(piece),
        "polyphony": polyphony(piece),
        "note_density": note_density(piece),
        "pitch_mean": float(pitch.mean()) if len(pitch) else 0.0,
        "pitch_std": float(pitch.std()) if len(pitch) else 0.0,
        "pitch_range": float(pitch.max() - pitch.min()) if len(pitch) else 0.0,
        "duration_beats": float(np.mean(piece.end_beat - piece.start_beat)) if len(piece) else 0.0,
        "ioi_seconds": float(np.diff(onsets).mean()) if len(onsets) > 1 else 0.0,
        "n_instruments": float(len(set(piece.program.tolist()))),
        "drum_share": float((~pitched).mean()) if len(piece) else 0.0,
        "pitch_class_histogram": pitch_class_histogram(piece).round(5).tolist(),
    }
    if with_compression:
        from midilm.evaluate.patterns import compression_ratio

        out["compression_ratio"] = compression_ratio(piece)
    return out


def feature_matrix(features: list[dict]) -> np.ndarray:
    """Rows of VECTOR_FEATURES followed by the 12-bin pitch-class histogram."""
    return np.array([[f[k] for k in VECTOR_FEATURES] + list(f["pitch_class_histogram"]) for f in features],
                    dtype=float)


def overlap_area(a: list[float], b: list[float], points: int = 512) -> float | None:
    """Shared area of two Gaussian KDEs (None with fewer than 2 values on a side)."""
    from scipy.stats import gaussian_kde

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return None
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    if hi - lo < 1e-12:
        return 1.0

    def kde(v: np.ndarray):
        if v.std() < 1e-9:  # all equal: a narrow bump, so the KDE is defined
            v = v + np.random.default_rng(0).normal(0, 1e-3 * (hi - lo), len(v))
        return gaussian_kde(v)

    ka, kb = kde(a), kde(b)
    pad = 5 * float(np.sqrt(max(ka.covariance[0, 0], kb.covariance[0, 0])))  # the tails hold no mass past this
    xs = np.linspace(lo - pad, hi + pad, points)
    shared = np.minimum(ka(xs), kb(xs))
    integrate = getattr(np, "trapezoid", None) or np.trapz  # numpy 1.x has only trapz
    return float(np.clip(integrate(shared, xs), 0.0, 1.0))


def _stats(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def compare_distributions(generated: list[dict], reference: list[dict]) -> dict:
    """For each distribution feature: generated and reference mean/std and the KDE overlapping area."""
    out = {}
    for k in DISTRIBUTION_FEATURES:
        g = [f[k] for f in generated if f.get(k) is not None]
        r = [f[k] for f in reference if f.get(k) is not None]
        out[k] = {"generated": _stats(g), "reference": _stats(r), "overlap_area": overlap_area(g, r)}
    return out


def _small_sets(n_generated: int, n_reference: int, dimensions: int, value: float, note: str) -> dict:
    """`small_sets` and the report's note: n vectors span at most n - 1 dimensions, so with n <= dimensions a
    set's covariance is singular and the distance compares the sets only within the directions they span."""
    notes = [note] if note else []
    if not math.isfinite(value):
        notes.append("no value: a vector holds NaN or inf")
    small = min(n_generated, n_reference) <= dimensions
    if small:
        notes.append(f"indicative only: {n_generated} generated and {n_reference} reference pieces for "
                     f"{dimensions} dimensions (a covariance is full rank only with more pieces than dimensions)")
    return {"small_sets": small, "note": "; ".join(notes)}


def symbolic_frechet(generated: list[dict], reference: list[dict]) -> dict:
    """Frechet distance between the standardised feature vectors of the two sets."""
    g, r = feature_matrix(generated), feature_matrix(reference)
    if len(g) < 2 or len(r) < 2:
        return {"value": None, "note": "needs at least 2 generated and 2 reference pieces"}
    both = np.concatenate([g, r])
    mu, sd = both.mean(0), both.std(0)
    sd[sd < 1e-9] = 1.0
    value = frechet_distance((g - mu) / sd, (r - mu) / sd)
    return {"value": value if math.isfinite(value) else None, "dimensions": int(g.shape[1]), "n_generated": len(g),
            "n_reference": len(r), **_small_sets(len(g), len(r), int(g.shape[1]), value,
                                                 "features standardised over both sets together")}


def default_encoder_dir() -> Path:
    """The MIDI encoder shipped inside the understanding model."""
    return Path(__file__).resolve().parents[1] / "data" / "models" / "midilm-understand-tiny" / "encoder"


def encoder_frechet(generated_pieces: list, reference_pieces: list, encoder_dir: str | Path | None) -> dict:
    """Frechet distance between mean-pooled MIDI encoder embeddings of the two sets, or why it was skipped."""
    path = Path(encoder_dir) if encoder_dir else default_encoder_dir()
    if not (path / "config.json").is_file():
        return {"value": None, "note": f"skipped: no MIDI encoder at {path} (pass --encoder DIR)"}
    generated_pieces = [p for p in generated_pieces if len(p)]
    reference_pieces = [p for p in reference_pieces if len(p)]
    if len(generated_pieces) < 2 or len(reference_pieces) < 2:
        return {"value": None, "note": "skipped: needs at least 2 generated and 2 reference pieces with notes"}
    try:
        from midilm.models.encoder import MusicBertModel, embed_pieces
    except ImportError as e:
        return {"value": None, "note": f"skipped: the MIDI encoder module is not available ({e})"}
    model = MusicBertModel.from_pretrained(str(path)).eval()
    g = np.asarray(embed_pieces(model, generated_pieces, pool="mean"), dtype=float)
    r = np.asarray(embed_pieces(model, reference_pieces, pool="mean"), dtype=float)
    value = frechet_distance(g, r)
    return {"value": value if math.isfinite(value) else None, "dimensions": int(g.shape[1]), "encoder": str(path),
            "n_generated": len(g), "n_reference": len(r),
            **_small_sets(len(g), len(r), int(g.shape[1]), value, "")}


def summarise_features(features: list[dict]) -> dict:
    """Mean and spread of each distribution feature and the mean pitch-class histogram of a set."""
    out = {k: _stats([f[k] for f in features if f.get(k) is not None]) for k in DISTRIBUTION_FEATURES}
    hists = [f["pitch_class_histogram"] for f in features]
    out["pitch_class_histogram"] = np.mean(hists, axis=0).round(5).tolist() if hists else [0.0] * 12
    out["n"] = len(features)
    return out
