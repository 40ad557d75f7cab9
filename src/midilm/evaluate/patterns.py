"""Compression ratio of a piece by COSIATEC (Meredith), the repetition measure Text2midi reports as CR.

The piece is a set of (onset, pitch) points: pitched notes only (a drum's key number is no pitch), onsets
on a 1/12-beat grid, duplicates merged. SIA finds, for every vector v between two points, the maximal
translatable pattern MTP(v) = the points p with p + v also in the set; SIATEC turns each MTP into a
translational equivalence class (TEC): the pattern and every translator t that maps all of it into the set.
A TEC encodes its covered points with |pattern| + |translators| - 1 numbers. COSIATEC repeatedly keeps the
TEC with the best compression ratio (covered points / encoding length; ties: more points covered), removes
the points it covers and starts again on the rest; what is left when no TEC compresses is encoded as itself.
The compression ratio is the number of points over the total encoding length (1.0 = no repetition).

Caps keep it fast and are part of the measure (recorded in the result): at most `max_points` points (the
first ones in time), at most `max_patterns` MTPs per round (the largest), at most `max_rounds` rounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

GRID = 12  # onset steps per quarter note
_PITCH_SPAN = 1024  # key = onset * span + pitch; any pitch difference fits, so key differences are vectors


@dataclass
class Cover:
    points: int
    encoding_length: int
    tecs: list[tuple[int, int, int]] = field(default_factory=list)  # (pattern size, translators, covered)
    truncated: bool = False

    @property
    def ratio(self) -> float:
        return self.points / self.encoding_length if self.encoding_length else 1.0


def point_keys(piece, grid: int = GRID) -> np.ndarray:
    """Sorted unique integer keys of the pitched notes' (onset on the grid, pitch) points."""
    pitched = piece.program != 128
    onset = np.rint(piece.start_beat[pitched] * grid).astype(np.int64)
    return np.unique(onset * _PITCH_SPAN + piece.pitch[pitched].astype(np.int64))


def _mtps(keys: np.ndarray, max_patterns: int) -> list[np.ndarray]:
    """SIA: the maximal translatable patterns of the largest size first (index arrays into keys)."""
    n = len(keys)
    i, j = np.triu_indices(n, k=1)
    vec = keys[j] - keys[i]
    order = np.lexsort((i, vec))
    vec, i = vec[order], i[order]
    cuts = np.flatnonzero(np.diff(vec)) + 1
    starts = np.concatenate(([0], cuts))
    sizes = np.diff(np.concatenate((starts, [len(vec)])))
    keep = np.flatnonzero(sizes >= 2)  # a one-point pattern never compresses
    keep = keep[np.argsort(-sizes[keep], kind="stable")[:max_patterns]]
    patterns, seen = [], set()
    for k in keep:
        members = i[starts[k]: starts[k] + sizes[k]]
        sig = members.tobytes()
        if sig not in seen:  # several vectors can share one pattern; its TEC is the same
            seen.add(sig)
            patterns.append(members)
    return patterns


def _tec(keys: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Translators of a pattern (zero included) and the points its TEC covers."""
    pattern = keys[members]
    candidates = keys - pattern[0]
    ok = np.ones(len(candidates), dtype=bool)
    for q in pattern[1:]:
        shifted = q + candidates[ok]
        pos = np.searchsorted(keys, shifted)
        hit = (pos < len(keys)) & (keys[np.minimum(pos, len(keys) - 1)] == shifted)
        ok[np.flatnonzero(ok)[~hit]] = False
        if ok.sum() == 1:  # only the identity is left
            break
    translators = candidates[ok]
    covered = np.unique((pattern[:, None] + translators[None, :]).ravel())
    return translators, covered


def cosiatec(keys: np.ndarray, max_points: int = 600, max_patterns: int = 300, max_rounds: int = 40) -> Cover:
    """Greedy COSIATEC cover of a set of point keys (see the module docstring)."""
    keys = np.unique(np.asarray(keys, dtype=np.int64))
    truncated = len(keys) > max_points
    keys = keys[:max_points]
    total = len(keys)
    cover = Cover(points=total, encoding_length=0, truncated=truncated)
    rest = keys
    for _ in range(max_rounds):
        if len(rest) < 4:  # a TEC needs two points translated at least once to save anything
            break
        best = None
        for members in _mtps(rest, max_patterns):
            translators, covered = _tec(rest, members)
            length = len(members) + len(translators) - 1
            score = (len(covered) / length, len(covered))
            if best is None or score > best[0]:
                best = (score, len(members), len(translators), covered)
        if best is None or best[0][0] <= 1.0:
            break
        _, size, n_trans, covered = best
        cover.tecs.append((size, n_trans, len(covered)))
        cover.encoding_length += size + n_trans - 1
        rest = np.setdiff1d(rest, covered, assume_unique=True)
    else:
        cover.truncated = cover.truncated or len(rest) >= 4
    cover.encoding_length += len(rest)
    return cover


def compression_ratio(piece, **caps) -> float | None:
    """COSIATEC compression ratio of a piece's pitched notes; None when it has fewer than 2 points."""
    keys = point_keys(piece)
    if len(keys) < 2:
        return None
    return cosiatec(keys, **caps).ratio
