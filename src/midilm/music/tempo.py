"""Tempo maps: convert between ticks, beats (quarter notes) and seconds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_MSPQ = 500000  # 120 bpm


@dataclass(frozen=True)
class TempoMap:
    """Piecewise-constant tempo: `ticks[i]` starts a segment at `mspq[i]` microseconds per quarter."""

    ticks_per_beat: int
    ticks: np.ndarray  # int64, strictly increasing, starts at 0
    mspq: np.ndarray  # int64

    @classmethod
    def from_changes(cls, ticks_per_beat: int, changes: list[tuple[int, int]]) -> TempoMap:
        """Build from (tick, microseconds per quarter) pairs; later changes at one tick win."""
        table: dict[int, int] = {0: DEFAULT_MSPQ}
        for tick, mspq in sorted(changes, key=lambda c: c[0]):
            if mspq > 0:
                table[int(tick)] = int(mspq)
        ticks = np.array(sorted(table), dtype=np.int64)
        return cls(ticks_per_beat, ticks, np.array([table[t] for t in ticks], dtype=np.int64))

    @classmethod
    def constant(cls, bpm: float, ticks_per_beat: int = 480) -> TempoMap:
        return cls.from_changes(ticks_per_beat, [(0, round(60e6 / bpm))])

    @property
    def seconds_at_changes(self) -> np.ndarray:
        seg = np.diff(self.ticks) * self.mspq[:-1] / (1e6 * self.ticks_per_beat)
        return np.r_[0.0, np.cumsum(seg)]

    @property
    def bpm(self) -> np.ndarray:
        return 60e6 / self.mspq

    def seconds(self, ticks) -> np.ndarray:
        t = np.asarray(ticks, dtype=np.float64)
        i = np.searchsorted(self.ticks, t, side="right") - 1
        i = np.clip(i, 0, len(self.ticks) - 1)
        return self.seconds_at_changes[i] + (t - self.ticks[i]) * self.mspq[i] / (1e6 * self.ticks_per_beat)

    def ticks_at(self, seconds) -> np.ndarray:
        """Fractional ticks at the given seconds (inverse of `seconds`)."""
        s = np.asarray(seconds, dtype=np.float64)
        starts = self.seconds_at_changes
        i = np.clip(np.searchsorted(starts, s, side="right") - 1, 0, len(starts) - 1)
        return self.ticks[i] + (s - starts[i]) * 1e6 * self.ticks_per_beat / self.mspq[i]

    def beats(self, ticks) -> np.ndarray:
        return np.asarray(ticks, dtype=np.float64) / self.ticks_per_beat

    def bpm_at(self, tick: int) -> float:
        i = max(int(np.searchsorted(self.ticks, tick, side="right")) - 1, 0)
        return float(60e6 / self.mspq[i])
