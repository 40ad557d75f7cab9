"""OctupleMIDI notes of dataset rows (whole pieces and clips), cached on disk, and their transpositions:
what the MIDI-LLaMA encoder reads, shared by training and the held-out evaluation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def cache_key(*parts) -> str:
    """A short hash of JSON-able parts (cache file names)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def row_notes(rows: list[dict], cache_dir: Path | None, progress: bool = True) -> list[np.ndarray | None]:
    """OctupleMIDI field values of every row (None where the file cannot be read), cached on disk unless
    `cache_dir` is None."""
    from midilm.codecs.octuple import encode_piece
    from midilm.errors import MidilmError
    from midilm.music.midi_io import read_midi

    ident = [(r["path"], r["unit"], r.get("clip_start"), r.get("clip_end")) for r in rows]
    cache = cache_dir / f"notes-{cache_key('octuple-v2', ident)}.npz" if cache_dir else None
    if cache and cache.is_file():
        z = np.load(cache, allow_pickle=False)
        notes, offsets, ok = z["notes"].astype(np.int64), z["offsets"], z["ok"]
        return [notes[offsets[i] : offsets[i + 1]] if ok[i] else None for i in range(len(rows))]
    by_path: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_path.setdefault(r["path"], []).append(i)
    out: list[np.ndarray | None] = [None] * len(rows)
    items = by_path.items()
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="encoding MIDI", unit="file")
    for path, idx in items:
        try:
            piece = read_midi(path)
        except MidilmError:
            continue
        for i in idx:
            r = rows[i]
            part = piece if r["unit"] == "piece" else piece.excerpt(float(r["clip_start"]), float(r["clip_end"]))
            enc = encode_piece(part)
            out[i] = enc if len(enc) else None
    if cache is None:
        return out
    cache.parent.mkdir(parents=True, exist_ok=True)
    lengths = [0 if n is None else len(n) for n in out]
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    flat = np.concatenate([n for n in out if n is not None]) if any(lengths) else np.zeros((0, 8))
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, notes=flat.astype(np.uint16), offsets=offsets, ok=np.array([n is not None for n in out]))
    tmp.replace(cache)
    return out


def transpose_notes(notes: np.ndarray, semitones: int) -> np.ndarray:
    """OctupleMIDI field values with every pitched note moved by `semitones` (drums stay); a note pushed
    out of 0..127 moves an octave back in."""
    from midilm.codecs.octuple import FIELDS
    from midilm.music.piece import shift_pitches

    out = np.array(notes, dtype=np.int64, copy=True).reshape(-1, 8)
    prog, pitch = FIELDS.index("program"), FIELDS.index("pitch")
    tonal = out[:, prog] != 128
    out[tonal, pitch] = shift_pitches(out[tonal, pitch], semitones)
    return out


