"""MIDI -> AMT events, value for value the reference's `midi_to_events`.

The reference walks mido's merged message stream: seconds accumulate as floats message by message,
each channel's instrument is its last program change, note-offs pop the oldest open note of the same
(instrument, pitch, channel), and unclosed notes get 25 ticks. Here the same rules run as array
operations over `scan_smf`'s columns, so a POP909 song encodes in well under a millisecond.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from midilm.codecs.amt.vocab import DRUMS, DUR_OFFSET, MAX_DUR, NOTE_OFFSET, TIME_OFFSET, TIME_RESOLUTION
from midilm.errors import MidiReadError, read_file_bytes
from midilm.music.smf import NOTE_OFF, NOTE_ON, PROGRAM, TEMPO, SmfError, SmfEvents, scan_smf

DEFAULT_TEMPO = 500000
UNCLOSED_DURATION = TIME_RESOLUTION // 4


def encode_midi(source: str | Path | bytes, *, allow_empty: bool = False) -> list[int]:
    """Raw AMT events `[time, 10000 + duration, 11000 + 128 * instrument + pitch, ...]` of a MIDI file.

    Times are absolute (pieces over 100 s give time values past 9999, as the reference's do; the
    training-line builder re-zeroes them). Raises MidiReadError for unreadable files and, unless
    `allow_empty`, for files without notes.
    """
    path = None if isinstance(source, (bytes, bytearray)) else source
    data = bytes(source) if path is None else read_file_bytes(path)
    try:
        events = scan_smf(data)
    except SmfError as e:
        raise MidiReadError(path, str(e)) from None
    if events.ticks_per_beat <= 0:
        raise MidiReadError(path, "SMPTE time division is not supported")
    tokens = encode_events(events)
    if not len(tokens) and not allow_empty:
        raise MidiReadError(path, "contains no notes")
    return tokens.tolist()


def message_seconds(ev: SmfEvents, order: np.ndarray) -> np.ndarray:
    """Seconds of each message in merged order, accumulated as mido's `MidiFile.__iter__` does."""
    tick = ev.tick[order]
    delta = np.diff(tick, prepend=0)
    tempo_pos = np.flatnonzero(ev.kind[order] == TEMPO)
    tempo_val = np.r_[DEFAULT_TEMPO, ev.d2[order][tempo_pos].astype(np.int64)]
    # a message's delta uses the last tempo set strictly before it in the stream
    tempo = tempo_val[np.searchsorted(tempo_pos, np.arange(len(tick)), side="left")]
    scale = tempo * 1e-6 / ev.ticks_per_beat
    return np.cumsum(np.where(delta > 0, delta * scale, 0.0))


def channel_programs(ev: SmfEvents, order: np.ndarray) -> np.ndarray:
    """Each message's channel program (last program change before it in the stream; default 0)."""
    kind, chan = ev.kind[order], ev.channel[order].astype(np.int64)
    n = len(order)
    pos = np.arange(n, dtype=np.int64)
    pc = np.flatnonzero(kind == PROGRAM)
    if not len(pc):
        return np.zeros(n, dtype=np.int64)
    pc_key = chan[pc] * n + pc  # sorted by channel, then stream position
    sort = np.argsort(pc_key, kind="stable")
    pc_key, pc_val = pc_key[sort], ev.d1[order][pc][sort].astype(np.int64)
    idx = np.searchsorted(pc_key, chan * n + pos, side="left") - 1
    ok = (idx >= 0) & (pc_key[np.maximum(idx, 0)] // n == chan)
    return np.where(ok, pc_val[np.maximum(idx, 0)], 0)


def fifo_pairs(group: np.ndarray, is_on: np.ndarray) -> np.ndarray:
    """For note events already in stream order, the index of the note-off that closes each note-on.

    Within one group (instrument, pitch, channel) a note-off pops the oldest open note-on, and is
    ignored when none is open. The queue length is a cumulative sum reflected at zero, and since a
    queue pops in push order the m-th effective note-off closes the m-th note-on. Returns -1 for
    note-ons never closed; the result is indexed like the input.
    """
    n = len(group)
    out = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return out
    order = np.argsort(group, kind="stable")
    g, on = group[order], is_on[order]
    start = np.empty(n, dtype=bool)
    start[0] = True
    np.not_equal(g[1:], g[:-1], out=start[1:])
    gid = np.cumsum(start) - 1
    step = np.where(on, 1, -1)
    c = np.cumsum(step)
    base = (c - step)[start]  # cumsum before each group's first element
    c = c - base[gid]
    big = 2 * n + 2  # later groups sit lower, so a global running min stays inside each group
    run_min = np.minimum.accumulate(c - gid * big) + gid * big
    length = c - np.minimum(run_min, 0)
    prev_length = np.empty_like(length)
    prev_length[0] = 0
    prev_length[1:] = length[:-1]
    prev_length[start] = 0
    effective_off = ~on & (prev_length > 0)

    start_idx = np.flatnonzero(start)

    def rank(mask: np.ndarray) -> np.ndarray:
        r = np.cumsum(mask)
        before = r[start_idx] - mask[start_idx]  # count before each group's first element
        return r - before[gid] - 1

    on_key = gid * (n + 1) + rank(on)
    off_idx = np.flatnonzero(effective_off)
    off_key = gid[off_idx] * (n + 1) + rank(effective_off)[off_idx]
    on_idx = np.flatnonzero(on)
    hit = np.searchsorted(on_key[on_idx], off_key)  # on_key is sorted: groups, then ranks
    out[order[on_idx[hit]]] = order[off_idx]
    return out


def encode_events(ev: SmfEvents) -> np.ndarray:
    """AMT events (int64, flat triplets) of a scanned file."""
    order = ev.merged_order()
    kind = ev.kind[order]
    note_mask = (kind == NOTE_ON) | (kind == NOTE_OFF)
    if not note_mask.any():
        return np.zeros(0, dtype=np.int64)
    seconds = message_seconds(ev, order)[note_mask]
    chan = ev.channel[order][note_mask].astype(np.int64)
    pitch = ev.d1[order][note_mask].astype(np.int64)
    instr = np.where(chan == 9, DRUMS, channel_programs(ev, order)[note_mask])
    is_on = kind[note_mask] == NOTE_ON

    closer = fifo_pairs((instr * 128 + pitch) * 16 + chan, is_on)
    on_idx = np.flatnonzero(is_on)
    onset = seconds[on_idx]
    off = closer[on_idx]
    duration = np.where(
        off >= 0, np.round(TIME_RESOLUTION * (seconds[np.maximum(off, 0)] - onset)), UNCLOSED_DURATION
    ).astype(np.int64)
    out = np.empty((len(on_idx), 3), dtype=np.int64)
    out[:, 0] = TIME_OFFSET + np.round(TIME_RESOLUTION * onset).astype(np.int64)
    out[:, 1] = DUR_OFFSET + np.minimum(duration, MAX_DUR - 1)
    out[:, 2] = NOTE_OFFSET + 128 * instr[on_idx] + pitch[on_idx]
    return out.reshape(-1)
