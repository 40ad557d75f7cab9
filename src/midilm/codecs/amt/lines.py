"""AMT training lines and anticipation controls, as the reference's `tokenize` builds them.

A line is one flag (AUTOREGRESS, or ANTICIPATE when it holds controls) and 341 (time, duration,
note) triplets. Pieces are filtered, padded with RESTs wherever nothing starts for over a second,
prefixed with a separator event, concatenated, cut every 1,023 ids and re-zeroed so each line starts
at time 0. Controls (events the model is given rather than asked for: a melody to accompany, a
span to infill around) are interleaved 5 s ahead of their time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from midilm.codecs.amt.vocab import (
    ANTICIPATE,
    ATIME_OFFSET,
    AUTOREGRESS,
    CONTROL_OFFSET,
    DELTA,
    DUR_OFFSET,
    EVENT_SIZE,
    EVENTS_PER_LINE,
    MAX_TIME,
    NOTE_OFFSET,
    REST,
    SEPARATOR,
    SPECIAL_OFFSET,
    TIME_OFFSET,
    TIME_RESOLUTION,
)

MIN_EVENTS = 100
MIN_SECONDS = 10
MAX_SECONDS = 3600
MAX_INSTRUMENTS = 16
ANTICIPATION_RATES = 10


def _triplets(events: Sequence[int]) -> np.ndarray:
    arr = np.asarray(events, dtype=np.int64)
    return arr[: len(arr) // 3 * 3].reshape(-1, 3)


def instruments_of(events: Sequence[int]) -> list[int]:
    """Instruments in order of first appearance (events or controls)."""
    notes = _triplets(events)[:, 2]
    notes = notes[notes < SPECIAL_OFFSET]
    notes = np.where(notes >= CONTROL_OFFSET, notes - CONTROL_OFFSET, notes) - NOTE_OFFSET
    instr = notes[notes >= 0] // 128
    _, first = np.unique(instr, return_index=True)
    return instr[np.sort(first)].tolist()


def skip_reason(events: Sequence[int]) -> str | None:
    """Why the reference leaves a piece out of training, or None to keep it."""
    t = _triplets(events)
    if len(t) < MIN_EVENTS:
        return "fewer than 100 notes"
    end = int(t[:, 0].max())
    if end < TIME_RESOLUTION * MIN_SECONDS:
        return "shorter than 10 s"
    if end > TIME_RESOLUTION * MAX_SECONDS:
        return "longer than 1 hour"
    if len(instruments_of(events)) > MAX_INSTRUMENTS:
        return "more than 16 instruments"
    return None


def pad_rests(events: Sequence[int], end_time: int | None = None, density: int = TIME_RESOLUTION) -> list[int]:
    """Insert (t, 0, REST) events so that no more than `density` ticks pass without an event."""
    t = _triplets(events)
    if not len(t):
        return []
    times = t[:, 0] - TIME_OFFSET
    prev = np.r_[0, times[:-1]]
    # the reference walks forward from the previous onset in steps of `density`
    n_rest = np.maximum((times - prev - 1) // density, 0)
    end_time = int(times.max()) if end_time is None else end_time
    tail = max((end_time - int(times[-1]) - 1) // density, 0)
    total = len(t) + int(n_rest.sum()) + tail
    out = np.empty((total, 3), dtype=np.int64)
    pos = np.arange(len(t)) + np.cumsum(n_rest)
    out[pos] = t
    rest_mask = np.ones(total, dtype=bool)
    rest_mask[pos] = False
    rest_prev = np.repeat(prev, n_rest)
    step = np.arange(len(rest_prev)) - np.repeat(np.cumsum(n_rest) - n_rest, n_rest) + 1
    rest_times = np.r_[rest_prev + step * density, int(times[-1]) + density * np.arange(1, tail + 1)]
    out[rest_mask, 0] = TIME_OFFSET + rest_times
    out[rest_mask, 1] = DUR_OFFSET
    out[rest_mask, 2] = REST
    return out.reshape(-1).tolist()


def anticipate(events: Sequence[int], controls: Sequence[int], delta: int = DELTA) -> tuple[list[int], list[int]]:
    """Interleave controls so that each sits before the first event at or after (its time - delta).

    Returns the interleaved ids and the controls left over (those more than `delta` past the last
    event), like the reference.
    """
    controls = list(controls)
    if not controls:
        return list(events), controls
    tokens: list[int] = []
    event_time = 0
    ci = 0
    control_time = controls[0] - ATIME_OFFSET
    for time, dur, note in zip(events[0::3], events[1::3], events[2::3]):
        while event_time >= control_time - delta:
            tokens.extend(controls[ci : ci + 3])
            ci += 3
            control_time = controls[ci] - ATIME_OFFSET if ci < len(controls) else float("inf")
        event_time = time - TIME_OFFSET
        tokens.extend([time, dur, note])
    return tokens, controls[ci:]


def as_controls(events: Sequence[int]) -> list[int]:
    """Turn events into anticipated controls (same notes, control ids)."""
    return [int(tok) + CONTROL_OFFSET for tok in events]


def split_instruments(events: Sequence[int], instruments: Iterable[int]) -> tuple[list[int], list[int]]:
    """Events of `instruments` become controls (for accompaniment: give the melody, ask for the rest)."""
    chosen = set(int(i) for i in instruments)
    t = _triplets(events)
    mask = np.isin((t[:, 2] - NOTE_OFFSET) // 128, list(chosen))
    return t[~mask].reshape(-1).tolist(), (t[mask] + CONTROL_OFFSET).reshape(-1).tolist()


def split_spans(events: Sequence[int], rate: float, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Anticipate 5 s spans starting at exponential gaps (mean 1/rate seconds): infilling practice."""
    t = _triplets(events)
    is_control = np.zeros(len(t), dtype=bool)
    span, next_span, end_span = True, 0, 0
    for i, time in enumerate(t[:, 0].tolist()):
        if span and time >= end_span:
            span = False
            next_span = time + int(TIME_RESOLUTION * rng.exponential(1.0 / rate))
        if not span and time >= next_span:
            span = True
            end_span = time + DELTA
        is_control[i] = span
    return t[~is_control].reshape(-1).tolist(), (t[is_control] + CONTROL_OFFSET).reshape(-1).tolist()


def split_random(events: Sequence[int], rate: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Each event becomes a control with probability rate / 10."""
    t = _triplets(events)
    mask = rng.random(len(t)) < rate / float(ANTICIPATION_RATES)
    return t[~mask].reshape(-1).tolist(), (t[mask] + CONTROL_OFFSET).reshape(-1).tolist()


def _augment(events: list[int], k: int, instruments: list[int], rng: np.random.Generator):
    """The reference's schedule of augmentations for copy k of a piece."""
    if k % 10 == 0:
        return list(events), []
    if k % 10 == 1:
        return split_spans(events, 0.05, rng)
    if k % 10 < 6:
        return split_random(events, int(rng.integers(1, ANTICIPATION_RATES)), rng)
    if len(instruments) > 1:
        u = 1 + int(rng.integers(len(instruments) - 1))
        return split_instruments(events, rng.choice(instruments, u, replace=False).tolist())
    return list(events), []


def _min_time_before_separator(seq: np.ndarray) -> int:
    t = seq.reshape(-1, 3)
    sep = np.flatnonzero(t[:, 2] == SEPARATOR)
    head = t[: sep[0]] if len(sep) else t
    if not len(head):
        return 0
    times = np.where(head[:, 2] < CONTROL_OFFSET, head[:, 0] - TIME_OFFSET, head[:, 0] - ATIME_OFFSET)
    return int(times.min())


def _relativize(seq: np.ndarray) -> np.ndarray:
    """Shift the part before the first separator so the line starts at time 0."""
    dt = _min_time_before_separator(seq)
    t = seq.reshape(-1, 3).copy()
    sep = np.flatnonzero(t[:, 2] == SEPARATOR)
    stop = sep[0] if len(sep) else len(t)
    t[:stop, 0] -= dt
    return t.reshape(-1)


def _max_time(seq: np.ndarray) -> int:
    t = seq.reshape(-1, 3)
    t = t[t[:, 2] != SEPARATOR]
    if not len(t):
        return 0
    return int(np.where(t[:, 2] < CONTROL_OFFSET, t[:, 0] - TIME_OFFSET, t[:, 0] - ATIME_OFFSET).max())


def training_lines(pieces: Iterable[Sequence[int]], augment_factor: int = 1, seed: int = 0,
                   stats: dict | None = None) -> Iterator[list[int]]:
    """1,024-id training lines from raw event lists (as `encode_midi` gives), in the reference's way.

    `stats`, when given, collects counts of skipped pieces by reason, discarded lines and RESTs.
    """
    rng = np.random.default_rng(seed)
    stats = stats if stats is not None else {}
    width = EVENT_SIZE * EVENTS_PER_LINE
    buffer = np.zeros(0, dtype=np.int64)
    z = AUTOREGRESS
    for events in pieces:
        reason = skip_reason(events)
        if reason:
            stats[reason] = stats.get(reason, 0) + 1
            continue
        events = list(events)
        instruments = instruments_of(events)
        end_time = int(_triplets(events)[:, 0].max())
        for k in range(augment_factor):
            ev, controls = _augment(events, k, instruments, rng)
            if not len(buffer):
                z = ANTICIPATE if k % 10 else AUTOREGRESS
            ev = pad_rests(ev, end_time)
            stats["rests"] = stats.get("rests", 0) + sum(1 for tok in ev[2::3] if tok == REST)
            tokens, _ = anticipate(ev, controls)
            buffer = np.concatenate([buffer, [SEPARATOR] * 3, np.asarray(tokens, dtype=np.int64)])
            while len(buffer) >= width:
                seq, buffer = _relativize(buffer[:width]), buffer[width:]
                if _max_time(seq) >= MAX_TIME:
                    stats["lines_discarded"] = stats.get("lines_discarded", 0) + 1
                    continue
                yield [z] + seq.tolist()
                stats["lines"] = stats.get("lines", 0) + 1
                z = ANTICIPATE if k % 10 else AUTOREGRESS
