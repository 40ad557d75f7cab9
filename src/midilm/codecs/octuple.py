"""OctupleMIDI exactly as MusicBERT encodes it: one 8-field token per note.

Fields, in order: bar (256), position in the bar in 1/16 beats (128), program (129, 128 = drums),
pitch (256, drums at pitch + 128), duration (128 codes: exact for 16 steps, then the step doubles every
16 codes, up to ~255 beats), velocity // 4 (32), time signature (254 (numerator, denominator) pairs,
reduced when too long), tempo (49: round(12 * log2(bpm / 16)) for bpm clipped to 16..256).
Times are quantised as round(tick * 16 / ticks_per_beat); a time-signature change takes effect at the
next bar line; notes are sorted as tuples. Sequences are windows of at most 1,000 notes (stride 250).

Token ids follow MusicBERT's fairseq dictionary: <s>=0, <pad>=1, </s>=2, <unk>=3, then every field's
values in field order, then <mask>; so a model converted from a MusicBERT checkpoint reads our ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

POS_RESOLUTION = 16  # per beat (quarter note)
BAR_MAX = 256
VELOCITY_QUANT = 4
TEMPO_QUANT = 12
MIN_TEMPO, MAX_TEMPO = 16, 256
DURATION_MAX = 8  # octaves of duration codes
MAX_TS_DENOMINATOR_POW = 6  # 2**6 = 64
MAX_NOTES_PER_BAR = 2  # a bar holds at most 2 whole notes
BEAT_NOTE_FACTOR = 4  # a beat is a quarter note
TRUNC_POS = 2**16
MAX_INST, MAX_PITCH, MAX_VELOCITY = 127, 127, 127
WINDOW, STRIDE = 1000, 250

FIELDS = ("bar", "position", "program", "pitch", "duration", "velocity", "time_signature", "tempo")


def _duration_tables() -> tuple[list[int], list[int]]:
    enc: list[int] = []  # duration in positions -> code
    dec: list[int] = []  # code -> shortest duration of the code
    for octave in range(DURATION_MAX):
        for _ in range(POS_RESOLUTION):
            dec.append(len(enc))
            enc.extend([len(dec) - 1] * (2**octave))
    return enc, dec


DUR_ENC, DUR_DEC = _duration_tables()
TS_LIST = [(num, 2**p) for p in range(MAX_TS_DENOMINATOR_POW + 1) for num in range(1, 2**p * MAX_NOTES_PER_BAR + 1)]
TS_INDEX = {ts: i for i, ts in enumerate(TS_LIST)}

FIELD_SIZES = (
    BAR_MAX,
    BEAT_NOTE_FACTOR * MAX_NOTES_PER_BAR * POS_RESOLUTION,  # 128
    MAX_INST + 2,  # 129
    2 * MAX_PITCH + 2,  # 256
    DURATION_MAX * POS_RESOLUTION,  # 128
    MAX_VELOCITY // VELOCITY_QUANT + 1,  # 32
    len(TS_LIST),  # 254
    round(math.log2(MAX_TEMPO / MIN_TEMPO) * TEMPO_QUANT) + 1,  # 49
)
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
BOS, PAD, EOS, UNK = range(4)
FIELD_OFFSETS = tuple(int(x) for x in len(SPECIALS) + np.r_[0, np.cumsum(FIELD_SIZES)[:-1]])
MASK = len(SPECIALS) + sum(FIELD_SIZES)  # 1236
VOCAB_SIZE = MASK + 1  # 1237


def duration_code(positions: int) -> int:
    return DUR_ENC[positions] if positions < len(DUR_ENC) else DUR_ENC[-1]


def duration_positions(code: int) -> int:
    return DUR_DEC[code] if code < len(DUR_DEC) else DUR_DEC[-1]


def velocity_code(velocity: int) -> int:
    return int(velocity) // VELOCITY_QUANT


def velocity_value(code: int) -> int:
    return code * VELOCITY_QUANT + VELOCITY_QUANT // 2


def tempo_code(bpm: float) -> int:
    bpm = min(max(bpm, MIN_TEMPO), MAX_TEMPO)
    return round(math.log2(bpm / MIN_TEMPO) * TEMPO_QUANT)


def tempo_value(code: int) -> float:
    return 2 ** (code / TEMPO_QUANT) * MIN_TEMPO


def reduce_time_signature(numerator: int, denominator: int) -> tuple[int, int]:
    """MusicBERT's reduction: halve oversize denominators, then split bars longer than two whole notes."""
    while denominator > 2**MAX_TS_DENOMINATOR_POW and denominator % 2 == 0 and numerator % 2 == 0:
        denominator //= 2
        numerator //= 2
    while numerator > MAX_NOTES_PER_BAR * denominator:
        for i in range(2, numerator + 1):
            if numerator % i == 0:
                numerator //= i
                break
    return numerator, denominator


def time_signature_code(numerator: int, denominator: int) -> int:
    """Code of a signature after MusicBERT's reduction. Signatures MusicBERT rejects (a denominator that
    is no power of two or cannot be halved exactly) get the nearest codable one instead of failing."""
    num, den = reduce_time_signature(max(int(numerator), 1), max(int(denominator), 1))
    if (num, den) not in TS_INDEX:
        den = 2 ** min(max(round(math.log2(den)), 0), MAX_TS_DENOMINATOR_POW)
        num = min(max(num * den // max(int(denominator), 1), 1), MAX_NOTES_PER_BAR * den)
    return TS_INDEX[(num, den)]


def encode_piece(piece) -> np.ndarray:
    """OctupleMIDI of a Piece: an int64 array [notes, 8] of field values (not ids), sorted."""
    if not len(piece):
        return np.zeros((0, 8), dtype=np.int64)
    tpb = piece.ticks_per_beat
    start_pos = np.round(piece.start_tick * POS_RESOLUTION / tpb).astype(np.int64)
    end_pos = np.round(piece.end_tick * POS_RESOLUTION / tpb).astype(np.int64)
    keep = start_pos < TRUNC_POS
    max_pos = int(min(start_pos.max() + 1, TRUNC_POS))

    # time signature and tempo code at every position (a change rules from its own position on)
    ts_at = np.full(max_pos, time_signature_code(4, 4), dtype=np.int64)
    for ts in sorted(piece.time_signatures, key=lambda t: t.tick):
        p = int(round(ts.tick * POS_RESOLUTION / tpb))
        if p < max_pos:
            ts_at[p:] = time_signature_code(ts.numerator, ts.denominator)
    tempo_at = np.full(max_pos, tempo_code(120.0), dtype=np.int64)
    tm = piece.tempo_map
    for tick, mspq in zip(tm.ticks.tolist(), tm.mspq.tolist()):
        p = int(round(tick * POS_RESOLUTION / tpb))
        if p < max_pos:
            tempo_at[p:] = tempo_code(60e6 / mspq)

    # bars: a new time signature only takes effect at a bar line
    bar_at = np.empty(max_pos, dtype=np.int64)
    pos_in_bar = np.empty(max_pos, dtype=np.int64)
    pos, bar = 0, 0
    while pos < max_pos:
        num, den = TS_LIST[ts_at[pos]]
        length = num * BEAT_NOTE_FACTOR * POS_RESOLUTION // den
        stop = min(pos + length, max_pos)
        bar_at[pos:stop] = bar
        pos_in_bar[pos:stop] = np.arange(stop - pos)
        pos, bar = pos + length, bar + 1

    s, e = start_pos[keep], end_pos[keep]
    drum = piece.program[keep] == 128
    dur = np.asarray(DUR_ENC, dtype=np.int64)[np.clip(e - s, 0, len(DUR_ENC) - 1)]
    out = np.stack([
        bar_at[s], pos_in_bar[s],
        np.where(drum, MAX_INST + 1, piece.program[keep]),
        np.where(drum, piece.pitch[keep] + MAX_PITCH + 1, piece.pitch[keep]),
        dur, piece.velocity[keep] // VELOCITY_QUANT, ts_at[s], tempo_at[s],
    ], axis=1).astype(np.int64)
    order = np.lexsort(out.T[::-1])
    return out[order]


def decode_octuple(notes: np.ndarray, ticks_per_beat: int = 480):
    """A Piece from OctupleMIDI field values (MusicBERT's encoding_to_MIDI, on our Piece)."""
    from midilm.music.gm import program_name
    from midilm.music.piece import Piece, TimeSignature, Track, empty_piece
    from midilm.music.tempo import TempoMap

    notes = np.asarray(notes, dtype=np.int64).reshape(-1, 8)
    if not len(notes):
        return empty_piece(ticks_per_beat)
    bars = int(notes[:, 0].max()) + 1
    # each bar takes its notes' most common signature; a bar without notes keeps the previous one
    bar_ts = np.full(bars, -1, dtype=np.int64)
    for b in np.unique(notes[:, 0]).tolist():
        values, counts = np.unique(notes[notes[:, 0] == b, 6], return_counts=True)
        bar_ts[b] = values[np.argmax(counts)]
    for b in range(bars):
        if bar_ts[b] < 0:
            bar_ts[b] = bar_ts[b - 1] if b else time_signature_code(4, 4)
    bar_len = np.array([TS_LIST[c][0] * BEAT_NOTE_FACTOR * POS_RESOLUTION // TS_LIST[c][1] for c in bar_ts])
    bar_start = np.r_[0, np.cumsum(bar_len)[:-1]]
    pos = bar_start[notes[:, 0]] + notes[:, 1]
    tick = lambda p: np.round(np.asarray(p) * ticks_per_beat / POS_RESOLUTION).astype(np.int64)  # noqa: E731
    dur = np.asarray(DUR_DEC, dtype=np.int64)[np.minimum(notes[:, 4], len(DUR_DEC) - 1)]
    drum = notes[:, 2] == MAX_INST + 1
    program = np.where(drum, 128, notes[:, 2])
    pitch = np.where(drum, notes[:, 3] - MAX_PITCH - 1, notes[:, 3])
    programs = list(dict.fromkeys(program.tolist()))
    track = np.array([programs.index(p) for p in program.tolist()], dtype=np.int64)
    changes, last = [], None
    for p, code in sorted(zip(pos.tolist(), notes[:, 7].tolist())):
        if code != last:
            changes.append((int(tick(p)), round(60e6 / tempo_value(code))))
            last = code
    sigs, last = [], None
    for b in range(bars):
        if bar_ts[b] != last:
            sigs.append(TimeSignature(int(tick(bar_start[b])), *TS_LIST[bar_ts[b]]))
            last = bar_ts[b]
    return Piece(ticks_per_beat, tick(pos), tick(pos + dur), pitch, notes[:, 5] * VELOCITY_QUANT + VELOCITY_QUANT // 2,
                 program, track, tracks=[Track(program_name(p), p) for p in programs],
                 tempo_map=TempoMap.from_changes(ticks_per_beat, changes), time_signatures=sigs)


def to_ids(notes: np.ndarray) -> np.ndarray:
    """Dictionary ids of field values ([n, 8] -> [n, 8])."""
    return np.asarray(notes, dtype=np.int64) + np.asarray(FIELD_OFFSETS, dtype=np.int64)


def from_ids(ids: np.ndarray) -> np.ndarray:
    return np.asarray(ids, dtype=np.int64) - np.asarray(FIELD_OFFSETS, dtype=np.int64)


@dataclass(frozen=True)
class Window:
    start: int  # index of the first note in the piece's encoding
    notes: np.ndarray  # [<= 1000, 8] field values, bars shifted to start within 0..255


def windows(notes: np.ndarray, length: int = WINDOW, stride: int = STRIDE) -> list[Window]:
    """Windows of at most `length` notes every `stride` notes, each cut where its bars would pass 255 and
    its bar numbers shifted to start at 0 (MusicBERT shifts them at random for training; `shift_bars`)."""
    out = []
    n = len(notes)
    for start in range(0, max(n - length, 0) + 1, stride) if n > length else [0]:
        w = notes[start : start + length].copy()
        if not len(w):
            continue
        w[:, 0] -= w[0, 0]
        w = w[w[:, 0] < BAR_MAX]
        out.append(Window(start, w))
    if n > length and (n - length) % stride:
        w = notes[n - length :].copy()
        w[:, 0] -= w[0, 0]
        out.append(Window(n - length, w[w[:, 0] < BAR_MAX]))
    return out


def shift_bars(window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """MusicBERT's training augmentation: move the window's bars to a random place in 0..255."""
    hi = BAR_MAX - 1 - int(window[:, 0].max())
    out = window.copy()
    out[:, 0] += int(rng.integers(0, hi + 1)) if hi > 0 else 0
    return out


def sequence_ids(window: np.ndarray) -> np.ndarray:
    """Flat ids as MusicBERT's binarised data: 8 x <s>, the notes' 8 ids each, 8 x </s> ([(n + 2) * 8])."""
    ids = to_ids(window).reshape(-1)
    return np.concatenate([np.full(8, BOS), ids, np.full(8, EOS)]).astype(np.int64)
