"""The published symbolic metrics: tempo bins (TB, TBT), key match (CK, CKD), instrument match, and the
MusPy-style pitch-class entropy, scale consistency and groove consistency (pure numpy on a Piece), and the
Frechet distance between two sets of feature vectors.

CKD counts a relative key as a match (A minor <-> C major: the major tonic is the minor tonic + 3
semitones); the public Text2midi script has this backwards, which is why it is written out here.
"""

from __future__ import annotations

import numpy as np

TEMPO_EDGES = (40, 60, 70, 90, 110, 140, 160, 210)  # Italian bins, MidiCaps / Text2midi
_PC = {"C": 0, "B#": 0, "C#": 1, "Db": 1, "D": 2, "D#": 3, "Eb": 3, "E": 4, "Fb": 4, "E#": 5, "F": 5, "F#": 6,
       "Gb": 6, "G": 7, "G#": 8, "Ab": 8, "A": 9, "A#": 10, "Bb": 10, "B": 11, "Cb": 11}


def tempo_bin(bpm: float) -> int:
    """Index of the Italian tempo bin (0 Grave ... 8 Prestissimo)."""
    return int(np.searchsorted(TEMPO_EDGES, bpm, side="right"))


def tb(pred_bpm: float | None, target_bpm: float | None) -> bool:
    return pred_bpm is not None and target_bpm is not None and tempo_bin(pred_bpm) == tempo_bin(target_bpm)


def tbt(pred_bpm: float | None, target_bpm: float | None) -> bool:
    return pred_bpm is not None and target_bpm is not None and abs(tempo_bin(pred_bpm) - tempo_bin(target_bpm)) <= 1


def parse_key(key: str | None) -> tuple[int, str] | None:
    """('Eb major') -> (3, 'major'); tolerant of 'E-flat minor', 'f# minor', 'Bbm'."""
    if not key:
        return None
    text = key.strip().replace("-flat", "b").replace(" flat", "b").replace("-sharp", "#").replace(" sharp", "#")
    parts = text.split()
    tonic = parts[0]
    mode = parts[1].lower() if len(parts) > 1 else "major"
    if len(parts) == 1 and tonic.endswith("m") and len(tonic) > 1:
        tonic, mode = tonic[:-1], "minor"
    tonic = tonic[0].upper() + tonic[1:]
    if tonic not in _PC or mode not in ("major", "minor"):
        return None
    return _PC[tonic], mode


def ck(pred_key: str | None, target_key: str | None) -> bool:
    """Same tonic (enharmonics merged) and mode."""
    p, t = parse_key(pred_key), parse_key(target_key)
    return p is not None and p == t


def ckd(pred_key: str | None, target_key: str | None) -> bool:
    """CK, or the relative key: a minor key's relative major has its tonic 3 semitones up."""
    p, t = parse_key(pred_key), parse_key(target_key)
    if p is None or t is None:
        return False
    if p == t:
        return True
    (pp, pm), (tp, tm) = p, t
    if pm == "major" and tm == "minor":
        return pp == (tp + 3) % 12
    if pm == "minor" and tm == "major":
        return tp == (pp + 3) % 12
    return False


def instrument_scores(pred: set[str], target: set[str]) -> tuple[float, float]:
    """Precision and recall of instrument words (empty target: recall 1)."""
    precision = len(pred & target) / len(pred) if pred else 0.0
    recall = len(pred & target) / len(target) if target else 1.0
    return precision, recall


def pitch_class_entropy(piece) -> float:
    """Shannon entropy (bits) of the pitched notes' pitch-class histogram."""
    pitch = piece.pitch[piece.program != 128]
    if not len(pitch):
        return 0.0
    hist = np.bincount(pitch % 12, minlength=12) / len(pitch)
    nz = hist[hist > 0]
    return float(-(nz * np.log2(nz)).sum())


def scale_consistency(piece) -> float:
    """Largest share of pitched notes inside one major or natural minor scale (MusPy).

    Every natural minor scale holds the pitch classes of its relative major, so the 12 major scales
    cover all 24."""
    pitch = piece.pitch[piece.program != 128]
    if not len(pitch):
        return 0.0
    hist = np.bincount(pitch % 12, minlength=12)
    major = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], dtype=bool)
    return max(int(hist[np.roll(major, tonic)].sum()) for tonic in range(12)) / len(pitch)


def groove_consistency(piece, resolution: int = 12) -> float:
    """1 - mean Hamming distance between onset patterns of consecutive bars (MusPy's definition)."""
    if not len(piece):
        return 0.0
    ts = piece.time_signature
    bar = piece.ticks_per_beat * 4 * ts.numerator / ts.denominator
    pos = np.floor((piece.start_tick % bar) / bar * resolution * ts.numerator).astype(np.int64)
    bars = (piece.start_tick // bar).astype(np.int64)
    width = resolution * ts.numerator
    grid = np.zeros((int(bars.max()) + 1, width), dtype=bool)
    grid[bars, np.clip(pos, 0, width - 1)] = True
    if len(grid) < 2:
        return 1.0
    dist = (grid[1:] != grid[:-1]).mean(axis=1)
    return float(1.0 - dist.mean())


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix through its eigen-decomposition. Rounding
    makes the zero eigenvalues of a singular matrix come out as about +-1e-16 times the largest: those below
    a relative tolerance are set to zero, as their square roots (1e-8) would be noise far above the rounding."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    w = np.where(w > _eig_tolerance(w, len(s)), w, 0.0)
    return (v * np.sqrt(w)) @ v.T


def _eig_tolerance(w: np.ndarray, dim: int) -> float:
    # numpy's matrix_rank rule: below this an eigenvalue is indistinguishable from rounding of the largest
    return float(np.abs(w).max(initial=0.0)) * max(dim, 1) * np.finfo(float).eps


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two sets of feature vectors (rows):
    |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

    The trace of the root is taken as tr((R S2 R)^(1/2)) with R = S1^(1/2): S1 S2 and R S2 R have the same
    eigenvalues, but R S2 R is symmetric positive semi-definite, so its eigenvalues are real and >= 0 up to
    rounding and the result stays finite for singular, rank-deficient and tiny sets. The usual
    `scipy.linalg.sqrtm(S1 @ S2)` takes a Schur form of a non-symmetric matrix; when the covariances are
    singular (fewer vectors than dimensions) it divides by sums of zero eigenvalues and can return inf or
    NaN, depending on the machine's linear-algebra kernels. NaN if a vector holds NaN or inf.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance needs two 2-D arrays with the same number of columns, got "
                         f"{a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"frechet_distance needs at least 2 vectors per set, got {len(a)} and {len(b)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False).reshape(a.shape[1], -1), np.cov(b, rowvar=False).reshape(b.shape[1], -1)
    if not (np.isfinite(s1).all() and np.isfinite(s2).all()):  # values near 1e154 overflow when squared
        return float("nan")
    root = _psd_sqrt(s1)
    m = root @ s2 @ root
    w = np.linalg.eigvalsh((m + m.T) / 2)
    trace_covmean = float(np.sqrt(np.where(w > _eig_tolerance(w, len(w)), w, 0.0)).sum())
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_covmean)
    return max(d, 0.0)  # rounding can take a zero distance a hair below zero
