"""AMT ids -> notes and a playable MIDI file, for any list of ids.

The reference decoder reads ids by position (time, duration, note), asserts on anything out of place
and writes every piece at 120 bpm, 50 ticks per beat, velocity 72. This decoder gives the reference's
notes for the sequences the reference decodes, and for everything else (model output, truncated or
shuffled ids, text ids of a merged LLM vocabulary) resynchronises on the slot order, drops what cannot
be placed and says how much it dropped or repaired. Notes are written on a tempo and meter grid of
the caller's choice so they sit on a DAW's bars.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from midilm.codecs.amt.vocab import (
    ANOTE_OFFSET,
    ANTICIPATE,
    AUTOREGRESS,
    CONTROL_OFFSET,
    DRUMS,
    DUR_OFFSET,
    MAX_DUR,
    NOTE_OFFSET,
    REST,
    SEPARATOR,
    SPECIAL_OFFSET,
    TIME_RESOLUTION,
    VOCAB_SIZE,
)
from midilm.music.gm import family, program_name
from midilm.music.piece import Piece, TimeSignature, Track, empty_piece
from midilm.music.tempo import TempoMap

DEFAULT_VELOCITY = 72  # the reference's
MAX_MELODIC = 15  # MIDI has 16 channels and channel 10 is drums


@dataclass
class DecodeReport:
    """What the decoder met; `dropped` and `repaired` sum up the problems."""

    tokens: int = 0
    notes: int = 0
    rests: int = 0
    segments: int = 1
    flags: int = 0
    controls_folded: int = 0
    text_or_unknown_ids: int = 0
    misplaced_ids: int = 0
    incomplete_events: int = 0
    stray_separators: int = 0
    overlaps_resolved: int = 0
    instruments_merged: list[int] = field(default_factory=list)
    instruments_dropped: list[int] = field(default_factory=list)
    notes_dropped_instruments: int = 0

    @property
    def dropped(self) -> int:
        return (self.text_or_unknown_ids + self.misplaced_ids + self.incomplete_events
                + self.stray_separators + self.notes_dropped_instruments)

    @property
    def repaired(self) -> int:
        return self.overlaps_resolved + len(self.instruments_merged)

    def as_dict(self) -> dict:
        return {**asdict(self), "dropped": self.dropped, "repaired": self.repaired}

    def summary(self) -> str:
        """One line for people: what was decoded and what was fixed."""
        parts = [f"{self.notes} notes from {self.tokens} ids"]
        names = {
            "text_or_unknown_ids": "non-music ids dropped", "misplaced_ids": "out-of-place ids dropped",
            "incomplete_events": "incomplete events dropped", "stray_separators": "stray separators dropped",
            "overlaps_resolved": "overlapping same-pitch notes re-paired",
            "notes_dropped_instruments": "notes of surplus instruments dropped",
        }  # fmt: skip
        for key, text in names.items():
            if getattr(self, key):
                parts.append(f"{getattr(self, key)} {text}")
        if self.instruments_merged:
            parts.append(f"{len(self.instruments_merged)} surplus instruments merged into their family")
        return "; ".join(parts)


@dataclass
class DecodedNotes:
    """Notes on the AMT grid (10 ms ticks), before they are placed on a tempo grid."""

    start: np.ndarray  # int64 ticks of 10 ms
    duration: np.ndarray
    instrument: np.ndarray  # 0-127, 128 drums
    pitch: np.ndarray


def _fold_controls(ids: np.ndarray) -> np.ndarray:
    """Anticipated controls become ordinary events (the reference shifts every id past the event
    block, whatever its slot)."""
    return np.where((ids >= CONTROL_OFFSET) & (ids != SEPARATOR), ids - CONTROL_OFFSET, ids)


def _classify(ids: np.ndarray) -> np.ndarray:
    """Slot class of each id: 0 time, 1 duration, 2 note, 3 rest, 4 separator, 5 flag, -1 other."""
    cls = np.full(len(ids), -1, dtype=np.int8)
    cls[(ids >= 0) & (ids < DUR_OFFSET)] = 0
    cls[(ids >= DUR_OFFSET) & (ids < NOTE_OFFSET)] = 1
    cls[(ids >= NOTE_OFFSET) & (ids < REST)] = 2
    cls[ids == REST] = 3
    cls[ids == SEPARATOR] = 4
    cls[(ids == AUTOREGRESS) | (ids == ANTICIPATE)] = 5
    return cls


def parse_events(tokens: Sequence[int], report: DecodeReport | None = None) -> DecodedNotes:
    """Notes of an id sequence: controls folded back, RESTs dropped, segments laid end to end.

    The common case (well-formed triplets) is handled with array operations; anything else goes
    through a resynchronising walk that keeps every complete (time, duration, note) it can find.
    """
    report = report if report is not None else DecodeReport()
    ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
    report.tokens = len(ids)
    flag = (ids == AUTOREGRESS) | (ids == ANTICIPATE)
    report.flags += int(flag.sum())
    ids = ids[~flag]
    folded = _fold_controls(ids)
    cls = _classify(folded)
    n = len(ids) // 3
    trip = cls[: 3 * n].reshape(n, 3)
    sep_trip = (trip == 4).all(axis=1)
    # the time slot is read by position, as the reference reads it: raw events of pieces over 100 s
    # carry times past 9999, which fold like control times
    event_trip = (ids[: 3 * n].reshape(n, 3)[:, 0] >= 0) & (trip[:, 1] == 1) & ((trip[:, 2] == 2) | (trip[:, 2] == 3))
    if len(ids) % 3 == 0 and (sep_trip | event_trip).all():
        t = folded.reshape(n, 3)
        report.controls_folded += int((ids.reshape(n, 3)[:, 2] >= CONTROL_OFFSET).sum() - sep_trip.sum())
        times, durs, notes, seg = t[:, 0], t[:, 1] - DUR_OFFSET, t[:, 2], np.cumsum(sep_trip)
        keep = ~sep_trip
    else:
        unknown = (ids < 0) | (ids >= VOCAB_SIZE)
        report.text_or_unknown_ids += int(unknown.sum())
        ids, folded, cls = ids[~unknown], folded[~unknown], cls[~unknown]
        report.controls_folded += int(((ids >= ANOTE_OFFSET) & (ids < SPECIAL_OFFSET)).sum())
        times, durs, notes, seg = _walk(folded, cls, report)
        keep = notes != SEPARATOR
    is_rest = keep & (notes == REST)
    report.rests += int(is_rest.sum())
    report.segments = int(seg.max()) + 1 if len(seg) else 1

    # lay segments end to end: each starts where the previous one's last note ended
    times = times.astype(np.int64)
    real = keep & ~is_rest
    if report.segments > 1:
        ends = np.zeros(report.segments, dtype=np.int64)
        np.maximum.at(ends, seg[real], (times + durs)[real])
        offsets = np.r_[0, np.cumsum(ends)[:-1]]
        times = times + offsets[seg]
    note = notes[real] - NOTE_OFFSET
    report.notes = int(real.sum())
    return DecodedNotes(times[real], durs[real].astype(np.int64), note // 128, note % 128)


def _walk(ids: np.ndarray, cls: np.ndarray, report: DecodeReport) -> tuple[np.ndarray, ...]:
    times: list[int] = []
    durs: list[int] = []
    notes: list[int] = []
    segs: list[int] = []
    seg, i, n = 0, 0, len(ids)
    pending_time: int | None = None
    pending_dur: int | None = None
    ids_l, cls_l = ids.tolist(), cls.tolist()
    while i < n:
        c, v = cls_l[i], ids_l[i]
        if c == 4:
            if pending_time is not None:
                report.incomplete_events += 1
                pending_time = pending_dur = None
            run = 1
            while i + run < n and cls_l[i + run] == 4 and run < 3:
                run += 1
            if run == 3:
                seg += 1
            else:
                report.stray_separators += run
            i += run
            continue
        if pending_time is None:
            # a raw time past 9999 looks like another block; position decides, as in the reference
            if c == 0 or (c in (1, 2, 3) and i + 2 < n and cls_l[i + 1] == 1 and cls_l[i + 2] in (2, 3)):
                pending_time = v
            else:
                report.misplaced_ids += 1
        elif pending_dur is None:
            if c == 1:
                pending_dur = v - DUR_OFFSET
            elif c == 0:
                report.incomplete_events += 1
                pending_time = v
            elif c in (2, 3):
                report.incomplete_events += 1
                pending_time = None
            else:
                report.misplaced_ids += 1
        else:
            if c in (2, 3):
                times.append(pending_time)
                durs.append(pending_dur)
                notes.append(v)
                segs.append(seg)
                pending_time = pending_dur = None
            elif c == 0:
                report.incomplete_events += 1
                pending_time, pending_dur = v, None
            else:
                report.misplaced_ids += 1
        i += 1
    if pending_time is not None:
        report.incomplete_events += 1
    as_arr = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    return as_arr(times), as_arr(durs), as_arr(notes), as_arr(segs)


def limit_instruments(
    notes: DecodedNotes, report: DecodeReport, max_melodic: int = MAX_MELODIC
) -> tuple[DecodedNotes, np.ndarray]:
    """Keep the `max_melodic` melodic instruments with most notes; merge each other one into a kept
    instrument of its GM family, or drop it when its family has none (with a warning).
    Returns the notes and the mask of input notes kept."""
    melodic = notes.instrument[notes.instrument != DRUMS]
    values, counts = np.unique(melodic, return_counts=True)
    if len(values) <= max_melodic:
        return notes, np.ones(len(notes.pitch), dtype=bool)
    ranked = values[np.lexsort((values, -counts))]
    kept, extra = ranked[:max_melodic], ranked[max_melodic:]
    instrument = notes.instrument.copy()
    keep_mask = np.ones(len(instrument), dtype=bool)
    for prog in extra.tolist():
        target = next((int(k) for k in kept if family(int(k)) == family(prog)), None)
        sel = notes.instrument == prog
        if target is None:
            keep_mask &= ~sel
            report.instruments_dropped.append(prog)
            report.notes_dropped_instruments += int(sel.sum())
        else:
            instrument[sel] = target
            report.instruments_merged.append(prog)
    warnings.warn(f"more than {max_melodic} melodic instruments: merged {report.instruments_merged}, "
                  f"dropped {report.instruments_dropped}", stacklevel=3)
    kept_notes = DecodedNotes(notes.start[keep_mask], notes.duration[keep_mask], instrument[keep_mask],
                              notes.pitch[keep_mask])
    return kept_notes, keep_mask


def pair_like_midi(start: np.ndarray, end: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Re-pair overlapping notes of one (instrument, pitch) the way a MIDI file stores them: the first
    note-off ends the first sounding note. Returns new ends (aligned with `start`) and how many changed."""
    order = np.lexsort((start, group))
    g = group[order]
    bounds = np.flatnonzero(np.r_[True, g[1:] != g[:-1], True])
    new_end = end[order].copy()
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a > 1:
            new_end[a:b] = np.sort(new_end[a:b])
    out = np.empty_like(end)
    out[order] = new_end
    return out, int((out != end).sum())


def decode_tokens(
    tokens: Sequence[int],
    *,
    bpm: float = 120.0,
    time_signature: tuple[int, int] = (4, 4),
    ticks_per_beat: int = 480,
    velocity: int = DEFAULT_VELOCITY,
    velocities: Sequence[int] | None = None,
    text_vocab_size: int | None = None,
    max_melodic: int = MAX_MELODIC,
    snap: bool = True,
) -> tuple[Piece, DecodeReport]:
    """Decode AMT ids (or merged-vocabulary ids when `text_vocab_size` is given) to a Piece.

    Never raises on the ids: anything that cannot be placed is dropped and counted in the report.
    `bpm` and `time_signature` set the grid the notes are written on (seconds are preserved);
    `velocities`, when known (one per decoded note, in token order), replace the flat `velocity`.
    `snap` moves times that lie within the 10 ms rounding of the tokens onto the nearest 1/12 beat
    (straight and triplet sixteenths), so that notes meant for the grid sit exactly on it.
    """
    if not (1.0 <= bpm <= 1000.0):
        raise ValueError(f"bpm must be between 1 and 1000, got {bpm}")
    num, den = time_signature
    if not (1 <= num <= 64 and den in (1, 2, 4, 8, 16, 32, 64)):
        raise ValueError(f"time signature {num}/{den} is not valid")
    if not (1 <= velocity <= 127):
        raise ValueError(f"velocity must be 1..127, got {velocity}")
    ids = np.asarray(list(tokens), dtype=np.int64) if not isinstance(tokens, np.ndarray) else tokens.astype(np.int64)
    report = DecodeReport()
    if text_vocab_size is not None:
        is_music = (ids >= text_vocab_size) & (ids < text_vocab_size + VOCAB_SIZE)
        report.text_or_unknown_ids += int((~is_music).sum())
        ids = ids[is_music] - text_vocab_size
    notes = parse_events(ids, report)
    if text_vocab_size is not None:
        report.tokens += report.text_or_unknown_ids
    vel = np.full(len(notes.pitch), velocity, dtype=np.int64)
    if velocities is not None:
        given = np.clip(np.asarray(list(velocities), dtype=np.int64)[: len(vel)], 1, 127)
        vel[: len(given)] = given
    notes, kept = limit_instruments(notes, report, max_melodic)
    return notes_to_piece(notes, vel[kept], bpm, time_signature, ticks_per_beat, report, snap), report


def _to_ticks(amt_ticks: np.ndarray, ticks_per_amt: float, ticks_per_beat: int, snap: bool) -> np.ndarray:
    exact = amt_ticks * ticks_per_amt
    if snap:
        grid = ticks_per_beat / 12.0
        nearest = np.round(exact / grid) * grid
        # half an AMT tick is the most the tokens' own rounding can have moved a note
        close = np.abs(exact - nearest) <= 0.5 * ticks_per_amt + 1e-9
        exact = np.where(close, nearest, exact)
    return np.round(exact).astype(np.int64)


def notes_to_piece(notes: DecodedNotes, velocity: np.ndarray, bpm: float, time_signature: tuple[int, int],
                   ticks_per_beat: int, report: DecodeReport, snap: bool = True) -> Piece:
    if not len(notes.pitch):
        piece = empty_piece(ticks_per_beat)
        piece.tempo_map = TempoMap.constant(bpm, ticks_per_beat)
        piece.time_signatures = [TimeSignature(0, *time_signature)]
        return piece
    ticks_per_amt = bpm / 60.0 * ticks_per_beat / TIME_RESOLUTION
    start = _to_ticks(notes.start, ticks_per_amt, ticks_per_beat, snap)
    end = np.maximum(_to_ticks(notes.start + np.minimum(notes.duration, MAX_DUR - 1), ticks_per_amt,
                               ticks_per_beat, snap), start)
    end, changed = pair_like_midi(start, end, notes.instrument * 128 + notes.pitch)
    report.overlaps_resolved += changed // 2
    # tracks in order of first onset, as the reference assigns its channels
    first = {}
    for _, prog in sorted(zip(start.tolist(), notes.instrument.tolist())):
        first.setdefault(prog, len(first))
    track_of = np.array([first[p] for p in notes.instrument.tolist()], dtype=np.int64)
    tracks = [Track(program_name(p), p) for p in first]
    return Piece(
        ticks_per_beat, start, end, notes.pitch, velocity, notes.instrument, track_of, tracks=tracks,
        tempo_map=TempoMap.constant(bpm, ticks_per_beat), time_signatures=[TimeSignature(0, *time_signature)],
    )

