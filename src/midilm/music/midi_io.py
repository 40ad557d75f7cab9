"""Read any Standard MIDI File into a `Piece`, and write a `Piece` back (symusic does the bytes)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import symusic

from midilm.errors import MidiReadError, read_file_bytes
from midilm.music.gm import DRUMS
from midilm.music.piece import KeySignature, Piece, TimeSignature, Track
from midilm.music.smf import SmfError, scan_smf
from midilm.music.tempo import TempoMap


def read_midi(source: str | Path | bytes, *, allow_empty: bool = False, path: str | None = None) -> Piece:
    """Read a MIDI file (path or bytes) into a Piece.

    Raises MidiReadError naming the file when it is missing, not MIDI, corrupt or truncated, and,
    unless `allow_empty`, when it holds no notes.
    """
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = str(source)
        data = read_file_bytes(source)
    try:
        # our scanner is stricter than symusic about truncation and bad data bytes, and costs ~0.05 ms
        scanned = scan_smf(data)
        if scanned.ticks_per_beat <= 0:
            raise SmfError("SMPTE time division is not supported")
        score = symusic.Score.from_midi(data)
    except (SmfError, RuntimeError, ValueError) as e:
        raise MidiReadError(path, str(e).strip() or type(e).__name__) from None
    piece = piece_from_score(score, path=path)
    if not len(piece) and not allow_empty:
        raise MidiReadError(path, "contains no notes")
    return piece


def piece_from_score(score: symusic.Score, path: str | None = None) -> Piece:
    """Convert a tick-based symusic Score."""
    tracks: list[Track] = []
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("start", "dur", "pitch", "vel", "prog", "track")}
    for t in score.tracks:
        program = DRUMS if t.is_drum else int(t.program)
        a = t.notes.numpy()
        if not len(a["time"]):
            continue
        idx = len(tracks)
        tracks.append(Track(t.name, program))
        n = len(a["time"])
        cols["start"].append(a["time"].astype(np.int64))
        cols["dur"].append(np.maximum(a["duration"].astype(np.int64), 0))
        cols["pitch"].append(a["pitch"].astype(np.int64))
        cols["vel"].append(a["velocity"].astype(np.int64))
        cols["prog"].append(np.full(n, program, dtype=np.int64))
        cols["track"].append(np.full(n, idx, dtype=np.int64))
    cat = {k: (np.concatenate(v) if v else np.zeros(0, dtype=np.int64)) for k, v in cols.items()}
    tpb = int(score.ticks_per_quarter)
    tempo_map = TempoMap.from_changes(tpb, [(int(t.time), int(t.mspq)) for t in score.tempos])
    time_sigs = [TimeSignature(int(ts.time), int(ts.numerator), int(ts.denominator))
                 for ts in score.time_signatures if ts.numerator > 0 and ts.denominator > 0]
    key_sigs = [KeySignature(int(k.time), int(k.key), bool(k.tonality)) for k in score.key_signatures]
    return Piece(
        tpb, cat["start"], cat["start"] + cat["dur"], cat["pitch"], cat["vel"], cat["prog"], cat["track"],
        tracks=tracks, tempo_map=tempo_map, time_signatures=_dedupe(time_sigs), key_signatures=_dedupe(key_sigs),
        path=path,
    )


def _dedupe(items: list) -> list:
    """Sort by tick, keep the last of several at one tick, drop repeats of the previous value."""
    by_tick = {}
    for it in sorted(items, key=lambda x: x.tick):
        by_tick[it.tick] = it
    out = []
    for it in by_tick.values():
        if not out or {**vars(out[-1]), "tick": 0} != {**vars(it), "tick": 0}:
            out.append(it)
    return out


def piece_to_score(piece: Piece) -> symusic.Score:
    """A symusic Score with one track per (track, program); melodic tracks first so that symusic gives
    the first 15 their own channels (0-8, 10-15) and drums channel 10."""
    score = symusic.Score(piece.ticks_per_beat)
    for tick, mspq in zip(piece.tempo_map.ticks, piece.tempo_map.mspq):
        score.tempos.append(symusic.Tempo(int(tick), 60e6 / float(mspq)))
    for ts in piece.time_signatures:
        score.time_signatures.append(symusic.TimeSignature(ts.tick, ts.numerator, ts.denominator))
    for ks in piece.key_signatures:
        score.key_signatures.append(symusic.KeySignature(ks.tick, ks.sharps, int(ks.minor)))
    groups = sorted({(int(t), int(p)) for t, p in zip(piece.track, piece.program)}, key=lambda g: (g[1] == DRUMS, g))
    for track_idx, program in groups:
        mask = (piece.track == track_idx) & (piece.program == program)
        name = piece.tracks[track_idx].name if track_idx < len(piece.tracks) else ""
        t = symusic.Track(name=name, program=0 if program == DRUMS else program, is_drum=program == DRUMS)
        arr = {
            "time": piece.start_tick[mask].astype(np.int32),
            "duration": (piece.end_tick[mask] - piece.start_tick[mask]).astype(np.int32),
            "pitch": np.clip(piece.pitch[mask], 0, 127).astype(np.int8),
            "velocity": np.clip(piece.velocity[mask], 1, 127).astype(np.int8),
        }
        t.notes = symusic.Note.from_numpy(**arr)
        score.tracks.append(t)
    return score


def midi_bytes(piece: Piece) -> bytes:
    return bytes(piece_to_score(piece).dumps_midi())


def write_midi(piece: Piece, path: str | Path) -> Path:
    """Write a Standard MIDI File (type 1) atomically: a partial file never replaces a good one."""
    path = Path(path)
    data = midi_bytes(piece)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
