"""Harmony of a Piece: key and mode, key segments, beat-level Harte chords, most repeated chord pattern."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from midilm.music.gm import DRUMS
from midilm.music.piece import Piece

PC_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES = ("major", "minor")
FRAMES_PER_BEAT = 4

# chord vocabulary: Harte quality -> (intervals above the root, prior log-weight). The prior keeps
# rarer qualities from winning on a chroma that fits a plain triad about as well.
CHORD_QUALITIES: dict[str, tuple[tuple[int, ...], float]] = {
    "maj": ((0, 4, 7), 0.0),
    "min": ((0, 3, 7), 0.0),
    "7": ((0, 4, 7, 10), -0.06),
    "maj7": ((0, 4, 7, 11), -0.06),
    "min7": ((0, 3, 7, 10), -0.06),
    "dim": ((0, 3, 6), -0.08),
    "aug": ((0, 4, 8), -0.12),
    "sus4": ((0, 5, 7), -0.08),
    "sus2": ((0, 2, 7), -0.08),
}


@dataclass(frozen=True)
class KeyEstimate:
    tonic_pc: int
    mode: str
    confidence: float

    @property
    def tonic(self) -> str:
        return PC_NAMES[self.tonic_pc]

    @property
    def name(self) -> str:
        return f"{self.tonic} {self.mode}"


# ---------------------------------------------------------------------------------------------------------
# notes on a beat grid (shared by keys and chords)


def _tonal_notes(piece: Piece) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pitch, start and end ticks of the notes that carry harmony (drums never do)."""
    keep = (piece.program != DRUMS) & (piece.end_tick >= piece.start_tick)
    return (piece.pitch[keep].astype(np.int64), piece.start_tick[keep].astype(np.float64),
            piece.end_tick[keep].astype(np.float64))


def _tick_beats(lo: float, hi: float, tpb: float) -> np.ndarray:
    return np.arange(np.floor(lo / tpb), np.ceil(hi / tpb) + 1) * tpb


def _beat_grid(piece: Piece, start: np.ndarray, end: np.ndarray, beat_times: np.ndarray | None) -> np.ndarray:
    """Beat positions in ticks covering every note: the given beat times, or one per quarter note.

    Given beats are extended at their outer spacing, because labelled beats need not cover a pickup
    note or the last release.
    """
    tpb = float(piece.ticks_per_beat)
    lo, hi = float(start.min()), float(max(end.max(), start.max() + 1))
    if beat_times is None or len(beat_times) < 2:
        return _tick_beats(lo, hi, tpb)
    beats = np.unique(piece.tempo_map.ticks_at(np.asarray(beat_times, dtype=np.float64)))
    if len(beats) < 2:
        return _tick_beats(lo, hi, tpb)
    step_lo, step_hi = beats[1] - beats[0], beats[-1] - beats[-2]
    n_lo = int(np.ceil(max(beats[0] - lo, 0.0) / step_lo))
    n_hi = int(np.ceil(max(hi - beats[-1], 0.0) / step_hi))
    before = beats[0] - step_lo * np.arange(n_lo, 0, -1)
    after = beats[-1] + step_hi * np.arange(1, n_hi + 1)
    return np.concatenate([before, beats, after])


def _beat_chroma(pitch: np.ndarray, start: np.ndarray, end: np.ndarray,
                 beats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per beat: sounding time of each pitch class, and how long each pitch class was the lowest note.

    Both in frames (FRAMES_PER_BEAT per beat), shape (n_beats, 12). A difference array summed over
    time keeps this O(frames x pitch range + notes) with no loop over notes.
    """
    n_frames = (len(beats) - 1) * FRAMES_PER_BEAT
    index = np.arange(len(beats), dtype=np.float64) * FRAMES_PER_BEAT
    f0 = np.minimum(np.rint(np.interp(start, beats, index)).astype(np.int64), n_frames - 1)
    f1 = np.minimum(np.maximum(np.rint(np.interp(end, beats, index)).astype(np.int64), f0 + 1), n_frames)
    low = int(pitch.min())
    width = int(pitch.max()) - low + 1
    key = pitch - low
    size = (n_frames + 1) * width
    diff = np.bincount(f0 * width + key, minlength=size) - np.bincount(f1 * width + key, minlength=size)
    roll = np.cumsum(diff.reshape(n_frames + 1, width)[:-1], axis=0, dtype=np.int32)
    pcs = (np.arange(width) + low) % 12
    active = roll > 0
    frame_chroma = np.zeros((n_frames, 12), dtype=np.float32)
    for pc in range(12):
        cols = pcs == pc
        if cols.any():
            frame_chroma[:, pc] = roll[:, cols].sum(axis=1)
    lowest = np.argmax(active, axis=1)
    sounding = active[np.arange(n_frames), lowest]
    frame_bass = np.zeros((n_frames, 12), dtype=np.float32)
    frame_bass[np.flatnonzero(sounding), pcs[lowest[sounding]]] = 1.0
    per_beat = (-1, FRAMES_PER_BEAT, 12)
    return frame_chroma.reshape(per_beat).sum(axis=1), frame_bass.reshape(per_beat).sum(axis=1)


# ---------------------------------------------------------------------------------------------------------
# chords

_QUALITY_NAMES = tuple(CHORD_QUALITIES)
_N_CHORDS = 12 * len(CHORD_QUALITIES)  # the no-chord state comes after the chords
BASS_WEIGHT = 0.2  # chosen with NO_CHORD_SCORE and SWITCH_PENALTY on POP909 training songs only
NO_CHORD_SCORE = 0.25
SWITCH_PENALTY = 0.35


def _templates() -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm chord templates, shape (n_qualities * 12, 12), index 12 * quality + root, and priors."""
    rows, priors = [], []
    for intervals, prior in CHORD_QUALITIES.values():
        base = np.zeros(12)
        base[list(intervals)] = 1.0
        base[0] += 0.5  # arrangements double the root more than any other chord tone
        base /= np.linalg.norm(base)
        for root in range(12):
            rows.append(np.roll(base, root))
            priors.append(prior)
    return np.array(rows, dtype=np.float32), np.array(priors, dtype=np.float32)


_TEMPLATES, _PRIORS = _templates()
_ROOTS = np.tile(np.arange(12), len(CHORD_QUALITIES))


def _chord_scores(chroma: np.ndarray, bass: np.ndarray) -> np.ndarray:
    """Per-beat fit of every chord plus no-chord (last column), shape (n_beats, n_chords + 1)."""
    energy = np.linalg.norm(chroma, axis=1, keepdims=True)
    unit = chroma / np.maximum(energy, 1e-9)
    bass_share = bass / np.maximum(bass.sum(axis=1, keepdims=True), 1e-9)
    scores = unit @ _TEMPLATES.T + _PRIORS + BASS_WEIGHT * bass_share[:, _ROOTS]
    silent = energy[:, 0] <= 0
    scores[silent] = -1.0
    none = np.where(silent, 1.0, NO_CHORD_SCORE)[:, None]
    return np.concatenate([scores, none], axis=1)


def _viterbi(scores: np.ndarray, penalty: float) -> np.ndarray:
    """Best state path when every change of state costs `penalty`.

    With one switching cost for all pairs the best predecessor is either the state itself or the
    overall best one, so each step is O(states) rather than O(states^2).
    """
    n = len(scores)
    stayed = np.empty(scores.shape, dtype=bool)
    best_prev = np.empty(n, dtype=np.int64)
    total = scores[0].astype(np.float64)
    for t in range(1, n):
        best = int(total.argmax())
        switch = total[best] - penalty
        stayed[t] = total >= switch
        best_prev[t] = best
        total = np.maximum(total, switch) + scores[t]
    path = np.empty(n, dtype=np.int64)
    path[-1] = int(total.argmax())
    for t in range(n - 1, 0, -1):
        path[t - 1] = path[t] if stayed[t, path[t]] else best_prev[t]
    return path


def chord_label(state: int) -> str:
    """Harte label of a chord state index (12 * quality + root; the last index is no-chord)."""
    if state >= _N_CHORDS:
        return "N"
    return f"{PC_NAMES[state % 12]}:{_QUALITY_NAMES[state // 12]}"


class _Beats(NamedTuple):
    beats: np.ndarray  # beat boundaries in ticks, one more than beats
    chroma: np.ndarray  # (n_beats, 12)
    bass: np.ndarray  # (n_beats, 12)
    path: np.ndarray  # chord state per beat


def _analyse_beats(piece: Piece, beat_times: np.ndarray | None = None) -> _Beats | None:
    pitch, start, end = _tonal_notes(piece)
    if not len(pitch):
        return None
    beats = _beat_grid(piece, start, end, beat_times)
    chroma, bass = _beat_chroma(pitch, start, end, beats)
    return _Beats(beats, chroma, bass, _viterbi(_chord_scores(chroma, bass), SWITCH_PENALTY))


def _chord_list(piece: Piece, a: _Beats) -> list[dict]:
    seconds = piece.tempo_map.seconds(a.beats)
    change = np.flatnonzero(np.diff(a.path)) + 1
    starts, ends = np.r_[0, change], np.r_[change, len(a.path)]
    # leading and trailing silence is outside the music, not a no-chord region of it
    keep = [i for i, s in enumerate(starts) if a.path[s] != _N_CHORDS or 0 < i < len(starts) - 1]
    return [{"start": float(seconds[starts[i]]), "end": float(seconds[ends[i]]),
             "label": chord_label(int(a.path[starts[i]]))} for i in keep]


def estimate_chords(piece: Piece, beat_times: np.ndarray | None = None) -> list[dict]:
    """Chords per beat as Harte labels, consecutive equal labels merged: [{"start", "end", "label"}] (s).

    Without `beat_times` (seconds) the beats are the quarter notes of the file's tick grid. Each beat
    is matched against chord templates (pitch-class time plus a bass-note bonus) and a Viterbi pass
    with a fixed cost per change smooths the sequence.
    """
    a = _analyse_beats(piece, beat_times)
    return _chord_list(piece, a) if a is not None else []


def chord_pattern(chords: list[dict] | list[str]) -> tuple[list[str], int]:
    """The most repeated run of 3-5 chords and how often it occurs without overlap.

    Ties go to the longer pattern (more telling), then to the one heard first; no-chord labels are
    skipped. ([], 0) when no such run occurs twice.
    """
    labels = [c if isinstance(c, str) else c["label"] for c in chords]
    seq: list[str] = []
    for label in labels:
        if label != "N" and (not seq or seq[-1] != label):
            seq.append(label)
    best: tuple[int, int, int] = (0, 0, 0)  # count, length, -first position
    best_pattern: list[str] = []
    for n in range(3, 6):
        seen: dict[tuple[str, ...], tuple[int, int, int]] = {}  # count, first, end of last counted
        for i in range(len(seq) - n + 1):
            gram = tuple(seq[i:i + n])
            count, first, last_end = seen.get(gram, (0, i, -1))
            if i >= last_end:
                seen[gram] = (count + 1, first, i + n)
        for gram, (count, first, _) in seen.items():
            rank = (count, n, -first)
            if count >= 2 and rank > best:
                best, best_pattern = rank, list(gram)
    return best_pattern, best[0]


# ---------------------------------------------------------------------------------------------------------
# keys

# chord qualities folded to the triad that decides major/minor; dim, aug, sus and N fold to none
_TRIAD_OF = {"maj": 0, "7": 0, "maj7": 0, "aug": 0, "min": 1, "min7": 1, "dim": 1}
_FOLD = np.array([_TRIAD_OF.get(q, -1) for q in _QUALITY_NAMES] + [-1])
# ROTATE[t] reorders a pitch-class vector so that index 0 is pitch class t
_ROTATE = (np.arange(12)[None, :] + np.arange(12)[:, None]) % 12
_ROTATE24 = np.concatenate([_ROTATE, _ROTATE + 12], axis=1)
KEY_FEATURES = ("duration", "onsets", "bass", "on-beat duration", "first bass", "last bass", "last chroma",
                "log duration", "closing bass", "triads", "last triad", "closing triads", "opening triads")


def _triads(path: np.ndarray) -> np.ndarray:
    """Per-beat index into a 24-vector (major roots, then minor roots), -1 for anything else."""
    kind = _FOLD[path // 12]
    return np.where(kind >= 0, kind * 12 + path % 12, -1)


def _unit(v: np.ndarray) -> np.ndarray:
    total = float(v.sum())
    return v / total if total > 0 else v.astype(np.float64)


def _histogram(index: np.ndarray, size: int) -> np.ndarray:
    return _unit(np.bincount(index[index >= 0], minlength=size).astype(np.float64))


def key_features(piece: Piece, a: _Beats | None = None) -> np.ndarray:
    """Tonic-relative evidence for each of the 12 tonics, shape (12, n_features).

    Every feature is a pitch-class (or major/minor triad) histogram rotated so that index 0 is the
    candidate tonic; one weight vector per mode then scores all transpositions alike. The histograms
    weigh notes by sounding time, on-beat onsets and bass, and separately look at the opening and
    the close, where tunes tend to state their tonic.
    """
    a = a if a is not None else _analyse_beats(piece)
    if a is None:
        return np.zeros((12, 9 * 12 + 4 * 24))
    pitch, start, end = _tonal_notes(piece)
    pc = pitch % 12
    tpb = float(piece.ticks_per_beat)
    on_beat = np.abs(start / tpb - np.rint(start / tpb)) < 0.05
    sounding = np.flatnonzero(a.chroma.sum(axis=1) > 0)
    first, last = sounding[0], sounding[-1]
    triads = _triads(a.path)
    duration = _unit(a.chroma.sum(axis=0))
    pcs = np.stack([
        duration,
        _unit(np.bincount(pc, minlength=12).astype(np.float64)),
        _unit(a.bass.sum(axis=0)),
        _unit(np.bincount(pc[on_beat], weights=(end - start)[on_beat], minlength=12)),
        _unit(a.bass[first]),
        _unit(a.bass[last]),
        _unit(a.chroma[last]),
        np.log(duration + 0.01),
        _unit(a.bass[sounding[-8:]].sum(axis=0)),
    ])
    chords = np.stack([
        _histogram(triads, 24),
        _histogram(triads[last:last + 1], 24),
        _histogram(triads[sounding[-8:]], 24),
        _histogram(triads[sounding[:8]], 24),
    ])
    return np.concatenate([
        pcs[:, _ROTATE].transpose(1, 0, 2).reshape(12, -1),
        chords[:, _ROTATE24].transpose(1, 0, 2).reshape(12, -1),
    ], axis=1)


def key_scores(features: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Log-linear score of the 24 keys (12 * mode + tonic) from `key_features`."""
    w = _KEY_WEIGHTS if weights is None else weights
    return np.concatenate([features @ w[0, :-1] + w[0, -1], features @ w[1, :-1] + w[1, -1]])


def _key_from_scores(scores: np.ndarray) -> KeyEstimate:
    p = np.exp(scores - scores.max())
    p /= p.sum()
    k = int(np.argmax(p))
    return KeyEstimate(k % 12, MODES[k // 12], round(float(p[k]), 3))


def estimate_key(piece: Piece) -> KeyEstimate:
    """Global key and mode from the notes alone (key-signature events are ignored: in the wild they are
    often a default C major). Confidence is the model's probability of the chosen key among all 24.
    """
    a = _analyse_beats(piece)
    if a is None:
        return KeyEstimate(0, "major", 0.0)
    return _key_from_scores(key_scores(key_features(piece, a)))


# Aarden-Essen key profiles: local keys only need a plain correlation, the close-of-piece cues of the
# global model mean nothing inside a window
_PROFILE_MAJOR = np.array([17.77, 0.15, 14.93, 0.16, 19.80, 11.36, 0.29, 22.06, 0.15, 8.15, 0.23, 4.95])
_PROFILE_MINOR = np.array([18.26, 0.74, 14.05, 16.86, 0.70, 14.44, 0.70, 18.62, 4.57, 1.93, 7.38, 1.76])
SEGMENT_WINDOW = 16  # beats of context either side of a beat for its local key
SEGMENT_PENALTY = 12.0  # cost of a key change, in beats' worth of correlation
GLOBAL_BONUS = 0.05  # per-beat preference for the global key, so that ties do not wander


def _profile_matrix() -> np.ndarray:
    rows = [np.roll(prof, t) for prof in (_PROFILE_MAJOR, _PROFILE_MINOR) for t in range(12)]
    m = np.array(rows)
    m -= m.mean(axis=1, keepdims=True)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


# (24, 12): rows 12 * mode + tonic (major, then minor), centred and unit length: a pitch-class histogram's dot
# product with a row ranks the keys as its correlation with that key's profile does (steering's established key)
KEY_PROFILES = _profile_matrix()


def _segments(piece: Piece, a: _Beats, key: KeyEstimate) -> list[dict]:
    cum = np.vstack([np.zeros(12), np.cumsum(a.chroma, axis=0)])
    n = len(a.chroma)
    idx = np.arange(n)
    lo, hi = np.maximum(idx - SEGMENT_WINDOW, 0), np.minimum(idx + SEGMENT_WINDOW + 1, n)
    window = cum[hi] - cum[lo]
    window -= window.mean(axis=1, keepdims=True)
    window /= np.maximum(np.linalg.norm(window, axis=1, keepdims=True), 1e-9)
    scores = window @ KEY_PROFILES.T
    scores[:, MODES.index(key.mode) * 12 + key.tonic_pc] += GLOBAL_BONUS
    path = _viterbi(scores, SEGMENT_PENALTY)
    seconds = piece.tempo_map.seconds(a.beats)
    change = np.flatnonzero(np.diff(path)) + 1
    starts, ends = np.r_[0, change], np.r_[change, n]
    out = []
    for s, e in zip(starts, ends):
        k = int(path[s])
        name = key.name if len(starts) == 1 else f"{PC_NAMES[k % 12]} {MODES[k // 12]}"
        out.append({"start": float(seconds[s]), "end": float(seconds[e]), "key": name})
    return out


def key_segments(piece: Piece) -> list[dict]:
    """Key regions [{"start", "end", "key"}] in seconds, merged; one region when the key never moves
    (then it carries the global estimate, so it always agrees with `estimate_key`)."""
    a = _analyse_beats(piece)
    if a is None:
        return []
    return _segments(piece, a, _key_from_scores(key_scores(key_features(piece, a))))


def analyze_harmony(piece: Piece, beat_times: np.ndarray | None = None) -> dict:
    """All of the above from one pass over the notes (what an annotator wants; ~3x cheaper than calling
    each function): key, key_tonic, mode, key_confidence, key_segments, chords, chord_pattern,
    chord_pattern_count."""
    a = _analyse_beats(piece)
    if a is None:
        return {"key": None, "key_tonic": None, "mode": None, "key_confidence": 0.0, "key_segments": [],
                "chords": [], "chord_pattern": [], "chord_pattern_count": 0}
    key = _key_from_scores(key_scores(key_features(piece, a)))
    chords = _chord_list(piece, a if beat_times is None else _analyse_beats(piece, beat_times))
    pattern, count = chord_pattern(chords)
    return {"key": key.name, "key_tonic": key.tonic, "mode": key.mode, "key_confidence": key.confidence,
            "key_segments": _segments(piece, a, key), "chords": chords, "chord_pattern": pattern,
            "chord_pattern_count": count}


# Learned by `midilm.annotate.harmony_eval.fit_key_weights` on the training splits of POP909 and
# Nottingham only (held-out songs never seen): row 0 major, row 1 minor; per feature, then a bias.
_KEY_WEIGHTS = np.array([
    [
        3.719, -0.03632, -0.09743, -1.054, 1.388, 1.055, -1.593, 2.519, 0.1582, -2.41,
        -2.842, -0.6738, 4.368, 0.005331, -0.2215, -1.28, 2.616, 0.1327, -2.66, 3.765,
        -0.5062, -1.837, -4.219, -0.01907, 1.002, -0.3408, 0.2046, -0.4579, -0.3347, 0.5714,
        -0.3167, 1.238, -0.1226, 0.4474, -0.9959, -0.8397, 0.543, 0.005794, 0.5587, -0.1259,
        0.1908, -0.22, -0.3411, 0.9844, 0.1963, 0.1131, -0.9206, -0.1885, 0.5317, -0.05911,
        0.05359, -0.1133, -0.1605, 0.1639, -0.1912, 0.7908, 0.05141, -0.5576, -0.3922, -0.103,
        0.09975, 0.1948, -0.02227, -0.1833, 0.05456, -0.1473, 0.001475, 0.2208, 0.008561, -0.04577,
        0.05468, -0.2237, -0.4909, 0.4019, 0.4028, -0.178, -0.5107, -0.04421, 0.1436, -0.1211,
        0.4083, 0.01255, -0.02612, 0.03097, 0.1119, -0.02683, 0.03947, -0.1119, 0.08189, 0.2989,
        -0.1623, 0.04196, 0.0008093, -0.01625, -0.3086, 0.1565, -0.07222, 0.1492, 0.2129, -0.08929,
        -0.2236, 0.3105, -0.1499, 0.03478, 0.09477, -0.01642, -0.1176, -0.11, 2.124, -0.05117,
        -1.342, -0.439, -0.1314, 0.7347, 0.1107, 2.459, -0.04092, 0.09712, -1.054, -0.4537,
        -1.897, -0.6962, 2.499, 0.08182, 0.0484, -0.5833, -0.4136, -3.606, -0.665, 2.07,
        -0.2416, -2.705, 0.4824, 0.361, 0.2536, -0.1604, 0.001866, -0.1586, 0.04146, -0.2613,
        -0.1381, -0.448, 0.03691, -0.185, -0.2568, -0.1061, 0.09642, -0.1366, -0.08944, 0.1042,
        -0.3591, 0.7506, -0.05474, 0.2256, -0.3096, 0.2787, 0.4526, 0.3801, 0.01986, 0.02565,
        0.2196, 0.1858, -0.1543, -0.4959, 0.05675, 0.1432, -0.08966, -0.2816, -0.4934, -0.2985,
        0.01014, 0.1517, -0.4435, -0.007977, 0.09742, -0.3263, -0.1763, 0.4311, -0.4947, 0.1043,
        2.355, -0.1786, -1.093, -0.3671, 0.07991, 0.04798, -0.02701, -0.03446, 0.02062, -0.001443,
        -0.5843, -0.001834, -0.4047, -0.2609, -0.3075, -0.1504, 0.1748, -1.304, 0.2108, -0.3704,
        0.06663, 1.226, -0.1093, -0.4039, 0.1088,
    ],
    [
        3.543, -1.979, -0.1596, 0.6544, -0.1417, -0.3603, -0.6781, 2.561, -0.7955, -2.416,
        -0.106, -0.2557, 2.725, -2.318, 0.1709, 1.793, -1.185, -0.05335, -0.569, 2.808,
        -0.4727, -3.07, -0.1486, 0.177, 0.6239, -1.105, -0.2746, -0.2539, 0.2291, -0.7565,
        -0.3007, 0.9886, 0.4683, -0.4364, 0.7935, -0.03163, -0.3643, -0.6856, -0.3792, -0.08353,
        0.01463, 0.09763, -0.1077, 0.1834, -0.1609, 0.5245, 0.05482, 0.1103, 0.09551, -0.3168,
        -0.004639, 0.3596, 0.1127, -0.1537, -0.09976, 0.2204, -0.1418, -0.1677, -0.01459, 0.09644,
        0.02524, 0.07553, 0.2887, -0.2488, 0.07548, 0.05207, 0.1164, -0.1427, -0.1451, -0.07926,
        0.1574, -0.1873, 0.5053, -0.1718, -0.03153, 0.4402, -0.04326, 0.2006, 0.03129, 0.3147,
        -0.04557, -0.429, -0.4835, -0.3166, 0.08582, -0.232, 0.07285, 0.06437, -0.06767, -0.01454,
        -0.08057, 0.09603, 0.1151, -0.2033, 0.05261, 0.005725, 0.07456, -0.08872, 0.5741, 0.2892,
        0.2003, -0.04361, 0.02293, -0.457, -0.2244, -0.03323, -0.4198, 0.08242, -0.2627, -1.231,
        -0.398, -0.06231, -0.1584, -1.831, -0.3401, 0.6642, 0.7799, -0.1616, 1.114, -0.1275,
        5.266, 0.07351, -1.456, -0.6597, 1.062, 3.607, -0.2328, 0.9324, -0.08917, -0.4859,
        -2.525, 0.6169, 0.4662, -0.1889, 0.0502, -0.2249, -0.08957, 0.1249, 0.2106, 0.1698,
        -0.272, -0.09003, 0.1474, -0.1297, -0.03359, 0.8313, -0.08078, 0.329, 0.2592, -0.7511,
        -0.158, -0.631, 0.04003, 0.3667, -0.2316, -0.08317, -0.08701, -0.376, 0.1199, 0.2676,
        -0.135, -0.0983, 0.03459, -0.3492, 0.01297, 0.149, -0.01584, 0.01522, 0.8526, 0.749,
        0.9807, 0.3084, 1.03, -0.4369, -0.2982, -1.25, -0.281, -0.286, -0.4127, 0.4906,
        -0.3816, -0.5401, -0.3513, 1.238, -0.1382, -0.2011, -0.1972, 0.4639, 0.2757, -0.06045,
        -0.1313, -0.1914, 1.262, -0.1764, -0.6564, -0.4769, 0.3121, 0.2752, 0.04663, 0.9919,
        0.2381, -0.4936, 0.3649, -0.05448, -0.1088,
    ],
])
