"""The AMT grammar as a sampling constraint: which ids may come next in a music sequence.

After the start-of-music flag a sequence is (time, duration, note) triplets. The grammar allows, per
slot: a time not before the previous onset (and later than it once an onset holds `max_notes_per_onset`
notes), inside the window; a duration; a note of an allowed instrument that is not already sounding at
this onset, with at most `max_melodic` melodic instruments plus drums in the piece. Every sequence it
lets through decodes with nothing dropped. It works on AMT ids (0..55027); backends add the vocabulary
offset. The state is per sequence and costs O(1) per token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from midilm.codecs.amt.vocab import DRUMS, DUR_OFFSET, MAX_DUR, MAX_TIME, NOTE_OFFSET, REST

TIME, DURATION, NOTE = 0, 1, 2
N_NOTE_IDS = REST - NOTE_OFFSET  # 16,512 (instrument, pitch) pairs


@dataclass(frozen=True)
class GrammarConfig:
    instruments: frozenset[int] | None = None  # allow-list of programs (128 = drums); None allows all
    max_melodic: int = 15
    max_notes_per_onset: int = 16
    min_duration: int = 1  # in 10 ms ticks: zero-length notes vanish in most DAWs
    max_time: int = MAX_TIME - 1  # last onset tick of the window
    max_gap: int | None = 400  # longest silence between onsets, in 10 ms ticks (None: no limit)
    pitch_range: tuple[int, int] = (0, 127)

    @classmethod
    def make(cls, instruments: Iterable[int] | None = None, **kw) -> GrammarConfig:
        allowed = None if instruments is None else frozenset(int(i) for i in instruments)
        if allowed is not None and not allowed:
            raise ValueError("the instrument allow-list is empty")
        if allowed is not None and not all(0 <= i <= DRUMS for i in allowed):
            raise ValueError(f"instruments must be GM programs 0-127 or 128 (drums), got {sorted(allowed)}")
        return cls(instruments=allowed, **kw)

    def note_mask(self) -> np.ndarray:
        """Static part of the note slot: allowed instruments and pitch range."""
        mask = np.zeros((DRUMS + 1, 128), dtype=bool)
        lo, hi = self.pitch_range
        rows = range(DRUMS + 1) if self.instruments is None else sorted(self.instruments)
        for inst in rows:
            mask[inst, lo : hi + 1] = True
        return mask.reshape(-1)


class AmtGrammar:
    """Grammar state of one sequence. `allowed()` says what may come next; `advance(id)` consumes it."""

    def __init__(self, config: GrammarConfig | None = None, start_time: int = 0):
        self.config = config or GrammarConfig()
        self.base_mask = self.config.note_mask()
        self.note_mask = self.base_mask.copy()
        self.slot = TIME
        self.time = start_time  # onset of the last note (or where the window starts)
        self.onset_notes: list[int] = []  # note indices sounding at `time`
        self.melodic: set[int] = set()
        self.notes = 0

    # -- what may come next -------------------------------------------------------------------------

    def allowed_range(self) -> tuple[int, int]:
        """[lo, hi) of AMT ids allowed in this slot (for the note slot, see `allowed_notes`)."""
        if self.slot == TIME:
            lo = self.time + (1 if len(self.onset_notes) >= self.config.max_notes_per_onset else 0)
            hi = self.config.max_time + 1
            if self.config.max_gap is not None:
                hi = min(hi, self.time + self.config.max_gap + 1)
            return lo, max(lo, hi)
        if self.slot == DURATION:
            return DUR_OFFSET + self.config.min_duration, DUR_OFFSET + MAX_DUR
        return NOTE_OFFSET, REST

    def allowed_notes(self) -> np.ndarray:
        """Boolean mask over the 16,512 note ids (instrument * 128 + pitch)."""
        return self.note_mask

    def can_continue(self) -> bool:
        lo, hi = self.allowed_range()
        return hi > lo and (self.slot != NOTE or bool(self.note_mask.any()))

    def allowed_mask(self, size: int = NOTE_OFFSET + N_NOTE_IDS + 1) -> np.ndarray:
        """Full boolean mask over AMT ids (slow path, for backends that want one; tests use it)."""
        mask = np.zeros(size, dtype=bool)
        lo, hi = self.allowed_range()
        if self.slot == NOTE:
            mask[NOTE_OFFSET:REST] = self.note_mask
        else:
            mask[lo:hi] = True
        return mask

    # -- consuming ids ----------------------------------------------------------------------------------

    def advance(self, amt_id: int) -> None:
        """Consume one id; raises ValueError for an id the grammar did not allow."""
        lo, hi = self.allowed_range()
        if self.slot == NOTE:
            idx = amt_id - NOTE_OFFSET
            if not (0 <= idx < N_NOTE_IDS and self.note_mask[idx]):
                raise ValueError(f"note id {amt_id} not allowed here")
            self._add_note(idx)
            self.slot = TIME
            return
        if not lo <= amt_id < hi:
            raise ValueError(f"id {amt_id} not allowed in slot {self.slot} (allowed {lo}..{hi - 1})")
        if self.slot == TIME:
            if amt_id != self.time:
                self._new_onset(amt_id)
            self.slot = DURATION
        else:
            self.slot = NOTE

    def _new_onset(self, time: int) -> None:
        # notes blocked as already sounding at the old onset are free again
        for idx in self.onset_notes:
            self.note_mask[idx] = self._static_allowed(idx)
        self.onset_notes = []
        self.time = time

    def _static_allowed(self, idx: int) -> bool:
        if not self.base_mask[idx]:
            return False
        inst = idx // 128
        return inst == DRUMS or len(self.melodic) < self.config.max_melodic or inst in self.melodic

    def _add_note(self, idx: int) -> None:
        self.notes += 1
        inst = idx // 128
        if inst != DRUMS and inst not in self.melodic:
            self.melodic.add(inst)
            if len(self.melodic) >= self.config.max_melodic:
                # no room for another melodic instrument: close every other one
                block = self.note_mask.reshape(DRUMS + 1, 128)
                for other in range(DRUMS):
                    if other not in self.melodic:
                        block[other] = False
        self.onset_notes.append(idx)
        self.note_mask[idx] = False

    def follow(self, amt_id: int) -> None:
        """Consume a given id (context, or an unconstrained sample) without enforcing the rules, but with the
        clock and the sounding notes moved as `advance` would: a context may hold rests longer than
        `max_gap` or instruments outside the allow-list. An id of another slot only moves the slot on."""
        if self.slot == TIME:
            if 0 <= amt_id < DUR_OFFSET and amt_id != self.time:
                self._new_onset(amt_id)
            self.slot = DURATION
        elif self.slot == DURATION:
            self.slot = NOTE
        else:
            idx = amt_id - NOTE_OFFSET
            if 0 <= idx < N_NOTE_IDS:
                self._add_note(idx)
            self.slot = TIME
