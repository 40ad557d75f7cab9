"""Message-level scan of Standard MIDI Files into flat numpy columns.

Higher-level parsers (symusic, pretty_midi) pair notes and split tracks by program, which loses what
the AMT reference depends on: the order of messages at one tick, the channel's program *at the
note-off*, and the time of every message (the reference accumulates float seconds message by message).
`scan_smf` keeps all of it. A C twin (`_smfscan.c`) does the byte work; `scan_smf_python` is the
portable fallback and the executable specification the C code is tested against.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass

import numpy as np

try:
    from midilm.music import _smfscan
except ImportError:  # no compiler at install time: the Python twin is ~40x slower but identical
    _smfscan = None

# event kinds (shared with _smfscan.c)
OTHER, NOTE_ON, NOTE_OFF, PROGRAM, TEMPO, TIME_SIGNATURE, KEY_SIGNATURE, CONTROL, PITCH_BEND = range(9)


class SmfError(ValueError):
    """The bytes are not a readable Standard MIDI File."""


@dataclass(frozen=True)
class SmfEvents:
    """Every message of a file except end-of-track, in file order (track by track).

    `d1`/`d2` hold: note and velocity for notes; program; controller and value; tempo in
    microseconds per quarter (d2); time signature numerator and denominator power; key signature
    sharps (signed) and minor flag; the status or meta type for other messages.
    """

    format: int
    ntracks: int
    ticks_per_beat: int
    tick: np.ndarray  # int64, absolute ticks within the message's track
    track: np.ndarray  # int32
    kind: np.ndarray  # uint8
    channel: np.ndarray  # uint8
    d1: np.ndarray  # int16
    d2: np.ndarray  # int32

    def __len__(self) -> int:
        return len(self.tick)

    def merged_order(self) -> np.ndarray:
        """Indices in playback order: by tick, ties kept in file order (as mido's merge_tracks)."""
        return np.argsort(self.tick, kind="stable")


def scan_smf(data: bytes) -> SmfEvents:
    """Scan the bytes of a Standard MIDI File; raises SmfError on malformed data."""
    if _smfscan is None:
        return scan_smf_python(data)
    try:
        fmt, ntracks, division, n, *cols = _smfscan.scan(data)
    except ValueError as e:
        raise SmfError(str(e)) from None
    if n == 0:
        cols = [b""] * 6
    dtypes = (np.int64, np.int32, np.uint8, np.uint8, np.int16, np.int32)
    arrays = [np.frombuffer(c, dtype=t) for c, t in zip(cols, dtypes)]
    return SmfEvents(fmt, ntracks, division, *arrays)


def scan_smf_python(data: bytes) -> SmfEvents:
    """Pure-Python scan with exactly the C scanner's output and errors."""
    size = len(data)
    if size < 14 or data[:4] != b"MThd":
        raise SmfError("truncated MIDI data" if data[:4] == b"MThd" else "not a MIDI file (no MThd header)")
    (hlen,) = struct.unpack_from(">I", data, 4)
    if hlen < 6 or hlen > size - 8:
        raise SmfError("truncated MIDI data")
    fmt, ntracks, division = struct.unpack_from(">HHh", data, 8)
    cols = (array("q"), array("i"), array("B"), array("B"), array("h"), array("i"))
    pos, found = 8 + hlen, 0
    while found < ntracks:
        if size - pos < 8:
            raise SmfError("truncated MIDI data")
        (clen,) = struct.unpack_from(">I", data, pos + 4)
        is_track = data[pos : pos + 4] == b"MTrk"
        pos += 8
        if clen > size - pos:
            raise SmfError("truncated MIDI data")
        if is_track:
            _scan_track_python(data, pos, pos + clen, found, cols)
            found += 1
        pos += clen
    arrays = [np.frombuffer(c.tobytes(), dtype=t) for c, t in zip(cols, (np.int64, np.int32, np.uint8,
                                                                              np.uint8, np.int16, np.int32))]
    return SmfEvents(fmt, ntracks, division, *arrays)


_DATA_LENGTH = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}
_SYSTEM_LENGTH = {0xF1: 1, 0xF3: 1, 0xF2: 2, 0xF6: 0, 0xF8: 0, 0xFA: 0, 0xFB: 0, 0xFC: 0, 0xFE: 0}


def _read_vlq(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    for _ in range(8):
        if pos >= end:
            raise SmfError("truncated MIDI data")
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            break
    return value, pos


def _scan_track_python(data: bytes, pos: int, end: int, track: int, cols: tuple) -> None:
    ticks, tracks, kinds, chans, d1s, d2s = cols

    def push(tick: int, kind: int, chan: int, d1: int, d2: int) -> None:
        ticks.append(tick)
        tracks.append(track)
        kinds.append(kind)
        chans.append(chan)
        d1s.append(d1)
        d2s.append(d2)

    tick, last_status = 0, -1
    while pos < end:
        delta, pos = _read_vlq(data, pos, end)
        tick += delta
        if pos >= end:
            raise SmfError("truncated MIDI data")
        status = data[pos]
        pos += 1
        peek: list[int] = []
        if status < 0x80:
            if last_status < 0:
                raise SmfError("running status without a previous status byte")
            peek = [status]
            status = last_status
        elif status != 0xFF:
            last_status = status
        if status == 0xFF:
            if pos >= end:
                raise SmfError("truncated MIDI data")
            meta = data[pos]
            length, pos = _read_vlq(data, pos + 1, end)
            if length > end - pos:
                raise SmfError("truncated MIDI data")
            body = data[pos : pos + length]
            pos += length
            if meta == 0x2F:
                continue
            if meta == 0x51 and length >= 3:
                push(tick, TEMPO, 0, 0, (body[0] << 16) | (body[1] << 8) | body[2])
            elif meta == 0x58 and length >= 2:
                push(tick, TIME_SIGNATURE, 0, body[0], body[1])
            elif meta == 0x59 and length >= 2:
                push(tick, KEY_SIGNATURE, 0, body[0] - 256 if body[0] > 127 else body[0], body[1])
            else:
                push(tick, OTHER, 0, meta, 0)
            continue
        if status in (0xF0, 0xF7):
            length, pos = _read_vlq(data, pos, end)
            if length > end - pos:
                raise SmfError("truncated MIDI data")
            pos += length
            push(tick, OTHER, 0, status, 0)
            continue
        n = _DATA_LENGTH.get(status & 0xF0) if status < 0xF0 else _SYSTEM_LENGTH.get(status)
        if n is None:
            raise SmfError("undefined status byte")
        values = [0, 0]
        for i in range(n):
            if i < len(peek):
                v = peek[i]
            else:
                if pos >= end:
                    raise SmfError("truncated MIDI data")
                v = data[pos]
                pos += 1
            if v > 127:
                raise SmfError("data byte must be in range 0..127")
            values[i] = v
        if len(peek) > n:
            raise SmfError("data byte must be in range 0..127")
        hi, ch = status & 0xF0, status & 0x0F
        a, b = values
        if hi == 0x90 and b > 0:
            push(tick, NOTE_ON, ch, a, b)
        elif hi in (0x90, 0x80):
            push(tick, NOTE_OFF, ch, a, b)
        elif hi == 0xC0:
            push(tick, PROGRAM, ch, a, 0)
        elif hi == 0xB0:
            push(tick, CONTROL, ch, a, b)
        elif hi == 0xE0:
            push(tick, PITCH_BEND, ch, 0, (a | (b << 7)) - 8192)
        else:
            push(tick, OTHER, ch if ch < 16 else 0, status, 0)
