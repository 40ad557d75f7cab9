"""Describe a piece (or a 20 s clip of it) as one flat, JSON-serialisable dict of musical features.

Rhythm comes from rhythm.py, key and chords from harmony.py; everything else (instruments, texture,
density, polyphony, register, dynamics, articulation, syncopation, swing, note values, contour) is
computed here on numpy arrays. Clips reuse the whole piece's tempo, meter and beat grid: 20 seconds are
too short to estimate a meter, and a clip of a piece keeps that piece's pulse.
"""

from __future__ import annotations

import numpy as np

from midilm.annotate import harmony
from midilm.annotate.rhythm import (
    Rhythm,
    analyze_rhythm,
    duration_word,
    tempo_map_bpm,
    tempo_word,
    tempo_word_simple,
)
from midilm.music.gm import DRUMS, family, plain_name, program_name
from midilm.music.piece import Piece

METADATA_KEYS = ("title", "composer", "era", "region", "nationality", "tune_type", "genre", "source", "license")
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# velocity -> dynamic: midpoints between the usual notation velocities (pp 33, p 49, mp 64, mf 80, f 96, ff 112)
DYNAMIC_EDGES = (41, 57, 72, 88, 104)
DYNAMIC_WORDS = ("pp", "p", "mp", "mf", "f", "ff")
CLIP_LENGTH = 20.0
_MELODY_NAMES = ("melody", "vocal", "voice", "lead", "singer")


def pitch_name(pitch: int) -> str:
    """MIDI pitch to a name with octave, 60 -> "C4"."""
    return f"{PITCH_NAMES[int(pitch) % 12]}{int(pitch) // 12 - 1}"


def dynamics_word(velocity: float) -> str:
    return DYNAMIC_WORDS[int(np.searchsorted(DYNAMIC_EDGES, velocity, side="right"))]


def register_word(pitch: np.ndarray) -> str:
    """wide (4 octaves or more between the 5th and 95th percentile), else low / middle / high by the median."""
    if not len(pitch):
        return "middle"
    lo, med, hi = np.percentile(pitch, (5, 50, 95))
    if hi - lo >= 48:
        return "wide"
    return "low" if med < 48 else "high" if med > 72 else "middle"


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _polyphony(start: np.ndarray, end: np.ndarray) -> tuple[float, int, float]:
    """Mean sounding notes over the time anything sounds, the maximum, and the share of that time with
    more than one note, from one sorted sweep over note-on (+1) and note-off (-1) events."""
    if not len(start):
        return 0.0, 0, 0.0
    times = np.concatenate([start, np.maximum(end, start)])
    delta = np.concatenate([np.ones(len(start)), -np.ones(len(end))])
    order = np.lexsort((delta, times))  # note-offs first at a shared time: legato is not a chord
    count = np.cumsum(delta[order])
    span = np.diff(times[order])
    sounding = count[:-1] > 0
    total = span[sounding].sum()
    if total <= 0:
        return float(len(start)), len(start), 1.0
    mean = float((count[:-1] * span)[sounding].sum() / total)
    several = float(span[count[:-1] > 1].sum() / total)
    return mean, int(count.max()), several


def _texture(several: float, onsets: np.ndarray) -> str:
    """monophonic when notes rarely overlap; else homophonic when many notes start together with
    others (chords, melody over chords), polyphonic when the voices mostly start on their own.

    Onsets within 35 ms count as one: a pianist's chord is never exactly together. A rough cue: broken-
    chord accompaniment and counterpoint are not told apart."""
    if several < 0.1 or not len(onsets):
        return "monophonic"
    t = np.sort(onsets)
    groups = 1 + np.count_nonzero(np.diff(t) > 0.035)
    shared = 1.0 - groups / len(t)
    return "homophonic" if shared >= 0.25 else "polyphonic"


def _articulation(start: np.ndarray, end: np.ndarray, track: np.ndarray) -> str:
    """staccato / legato / mixed from each note's length over the time to the next onset in its track."""
    if len(start) < 4:
        return "mixed"
    order = np.lexsort((start, track))
    s, e, t = start[order], end[order], track[order]
    # next distinct onset in the same track: search the (track, time) sorted keys just past this onset
    key = t * 1e7 + s
    nxt = np.searchsorted(key, key + 1e-6, side="right")
    has = nxt < len(s)
    has[has] = t[nxt[has]] == t[has]
    if has.sum() < 4:
        return "mixed"
    gap = s[nxt[has]] - s[has]
    ratio = np.median((e[has] - s[has]) / np.maximum(gap, 1e-3))
    return "staccato" if ratio < 0.6 else "legato" if ratio >= 0.9 else "mixed"


def _beat_positions(times: np.ndarray, rhythm: Rhythm) -> np.ndarray:
    """Positions in beats along the beat grid (fractional)."""
    bt = rhythm.beat_times
    if len(bt) < 2:
        return times * rhythm.bpm / 60.0
    pos = np.interp(times, bt, np.arange(len(bt), dtype=np.float64))
    # extrapolate past the last beat at the last beat's spacing
    past = times > bt[-1]
    pos[past] = len(bt) - 1 + (times[past] - bt[-1]) / max(bt[-1] - bt[-2], 1e-3)
    return pos


def _syncopation(start_pos: np.ndarray, end_pos: np.ndarray) -> float:
    """Share of notes that start off the beat and are held across the next beat."""
    if not len(start_pos):
        return 0.0
    frac = start_pos - np.floor(start_pos)
    off = (frac > 0.08) & (frac < 0.92)
    held = end_pos >= np.floor(start_pos) + 1.05
    return float(np.mean(off & held))


def _swing(start_pos: np.ndarray) -> bool:
    """Off-beat eighths pushed late (to 0.58-0.75 of the beat) instead of halfway, without triplet
    first-thirds that would make them plain triplets."""
    if len(start_pos) < 16:
        return False
    frac = np.unique(np.round(start_pos, 3)) % 1.0
    straight = np.count_nonzero((frac > 0.45) & (frac < 0.55))
    late = np.count_nonzero((frac >= 0.58) & (frac <= 0.75))
    third = np.count_nonzero((frac > 0.25) & (frac < 0.42))
    return bool(late >= 0.1 * len(frac) and late >= 2 * straight and third < 0.5 * late)


_NOTE_VALUES = ((0.25, "sixteenth notes"), (1 / 3, "triplets"), (0.5, "eighth notes"), (1.0, "quarter notes"),
                (2.0, "half notes"), (4.0, "whole notes"))


def _note_value(onset_pos: np.ndarray) -> str:
    """The commonest time between successive onsets of the melody, in note values of the beat grid."""
    ioi = np.diff(np.unique(np.round(onset_pos, 3)))
    ioi = ioi[(ioi > 0.1) & (ioi < 6)]
    if not len(ioi):
        return "quarter notes"
    values = np.array([v for v, _ in _NOTE_VALUES])
    nearest = np.abs(np.log2(ioi)[:, None] - np.log2(values)[None, :]).argmin(axis=1)
    return _NOTE_VALUES[int(np.bincount(nearest, minlength=len(values)).argmax())][1]


def _melody_mask(piece: Piece, pitched: np.ndarray) -> np.ndarray:
    """Notes of a track named like a melody, else the skyline: the highest pitched note of each onset."""
    names = [t.name.lower() for t in piece.tracks]
    melodic = [i for i, n in enumerate(names) if any(w in n for w in _MELODY_NAMES)]
    if melodic:
        mask = np.isin(piece.track, melodic) & pitched
        if mask.any():
            return mask
    idx = np.flatnonzero(pitched)
    if not len(idx):
        return pitched
    start = piece.start_tick[idx]
    # notes are sorted by onset then pitch: the last of each onset group is the highest
    last = np.r_[np.diff(start) != 0, True]
    mask = np.zeros(len(piece), dtype=bool)
    mask[idx[last]] = True
    return mask


def _contour(pitch: np.ndarray) -> str:
    """Shape of the melody: its mean pitch in eight equal stretches of notes."""
    if len(pitch) < 8:
        return "static"
    parts = np.array([p.mean() for p in np.array_split(pitch.astype(np.float64), 8)])
    if parts.max() - parts.min() < 3:
        return "static"
    first, last = parts[:2].mean(), parts[-2:].mean()
    peak, trough = int(parts.argmax()), int(parts.argmin())
    steps = np.sign(np.diff(parts))
    rising = np.count_nonzero(steps > 0)
    if last - first >= 3 and rising >= 5:
        return "ascending"
    if first - last >= 3 and rising <= 2:
        return "descending"
    if 2 <= peak <= 5 and parts[peak] - max(first, last) >= 3:
        return "arch"
    if 2 <= trough <= 5 and min(first, last) - parts[trough] >= 3:
        return "valley"
    return "wave"


def _round_segments(items: list[dict], shift: float, length: float) -> list[dict]:
    """Segments with times relative to `shift`, cut to [0, length] (chords found on the beat grid may
    start a little before the first note or outlast the music or the clip's window)."""
    out = []
    for it in items:
        start, end = max(float(it["start"]) - shift, 0.0), min(float(it["end"]) - shift, length)
        if end <= start:
            continue
        out.append({**it, "start": round(start, 3), "end": round(end, 3)})
    return out


def _harmony_fields(piece: Piece, beat_times: np.ndarray, shift: float, length: float) -> dict:
    beats = beat_times if len(beat_times) >= 2 else None
    if hasattr(harmony, "analyze_harmony"):
        # one pass over the notes for key, segments and chords (about 3x cheaper than the four calls)
        h = harmony.analyze_harmony(piece, beat_times=beats)
    else:
        key = harmony.estimate_key(piece)
        chords = harmony.estimate_chords(piece, beat_times=beats)
        pattern, count = harmony.chord_pattern(chords)
        h = {"key": key.name, "key_tonic": key.tonic, "mode": key.mode, "key_confidence": key.confidence,
             "key_segments": harmony.key_segments(piece), "chords": chords, "chord_pattern": pattern,
             "chord_pattern_count": count}
    return {
        "key": h["key"] or "",
        "key_tonic": h["key_tonic"] or "",
        "mode": h["mode"] or "",
        "key_confidence": round(float(h["key_confidence"] or 0.0), 3),
        "key_segments": _round_segments(h["key_segments"], shift, length),
        "chords": _round_segments(h["chords"], shift, length),
        "chord_pattern": [str(c) for c in h["chord_pattern"]],
        "chord_pattern_count": int(h["chord_pattern_count"]),
    }


def _describe(piece: Piece, rhythm: Rhythm, window: tuple[float, float] | None, metadata: dict | None) -> dict:
    """The flat dict for the notes of `piece` (already restricted to the window, if any)."""
    start_s = piece.start
    end_s = piece.end
    if window is None:
        duration = float(end_s.max()) if len(piece) else 0.0
        shift = 0.0
        beat_times = rhythm.beat_times
        bpm = rhythm.bpm
    else:
        shift, stop = window
        duration = stop - shift
        inside = (rhythm.beat_times >= shift - 1e-6) & (rhythm.beat_times < stop)
        beat_times = rhythm.beat_times[inside]
        # a tempo map may change inside the piece: the clip gets the tempo that holds over its notes
        bpm = tempo_map_bpm(piece) if rhythm.bpm_source == "tempo map" else rhythm.bpm
    bpm = round(float(bpm), 2)  # the words must agree with the number a caption shows
    pitched = piece.program != DRUMS
    p_pitch = piece.pitch[pitched]
    p_vel = piece.velocity[pitched]
    programs = piece.programs
    mean_poly, max_poly, several = _polyphony(start_s[pitched], end_s[pitched])
    melody = _melody_mask(piece, pitched)
    # syncopation and swing are heard in the melody; held accompaniment notes would blur them
    start_pos = _beat_positions(start_s[melody], rhythm)
    end_pos = _beat_positions(end_s[melody], rhythm)
    # note values are named in quarter notes, whatever the beat (a dotted quarter in 6/8)
    quarters = _quarters_per_grid_beat(rhythm)
    melody_pitch = piece.pitch[melody]
    span = float(end_s.max() - start_s.min()) if len(piece) else 0.0
    out: dict = {
        "duration": round(float(duration), 3),
        "duration_word": duration_word(duration),
        "bpm": bpm,
        "bpm_source": rhythm.bpm_source,
        "tempo_word": tempo_word(bpm),
        "tempo_word_simple": tempo_word_simple(bpm),
        "time_signature": rhythm.meter,
        "time_signature_source": rhythm.meter_source,
    }
    if len(p_pitch):
        out.update(_harmony_fields(piece, beat_times, shift, duration))
    else:
        out.update({"key": "", "key_tonic": "", "mode": "", "key_confidence": 0.0, "key_segments": [],
                    "chords": [], "chord_pattern": [], "chord_pattern_count": 0})
    out.update({
        "instruments": [program_name(p) for p in programs],
        "instrument_words": _dedupe([plain_name(p) for p in programs]),
        "families": _dedupe([family(p) for p in programs]),
        "has_drums": bool((~pitched).any()),
        "n_tracks": int(len(np.unique(piece.track))),
        "n_notes": int(len(piece)),
        "texture": _texture(several, start_s[pitched]),
        "note_density": round(len(piece) / max(span if window is None else duration, 1e-3), 3),
        "polyphony": round(mean_poly, 3),
        "max_polyphony": max_poly,
        "pitch_low": pitch_name(p_pitch.min()) if len(p_pitch) else "",
        "pitch_high": pitch_name(p_pitch.max()) if len(p_pitch) else "",
        "pitch_range_semitones": int(p_pitch.max() - p_pitch.min()) if len(p_pitch) else 0,
        "register": register_word(p_pitch),
        "dynamics": dynamics_word(float(p_vel.mean())) if len(p_vel) else "mf",
        "velocity_mean": round(float(p_vel.mean()), 2) if len(p_vel) else 0.0,
        "velocity_std": round(float(p_vel.std()), 2) if len(p_vel) else 0.0,
        "articulation": _articulation(start_s[pitched], end_s[pitched], piece.track[pitched]),
        "syncopation": round(_syncopation(start_pos, end_pos), 3),
        "swing": _swing(start_pos) if quarters == 1.0 else False,
        "note_value": _note_value(start_pos * quarters),
        "contour": _contour(melody_pitch),
    })
    for k in METADATA_KEYS:
        if metadata and metadata.get(k) is not None:
            out[k] = metadata[k]
    return out


def _quarters_per_grid_beat(rhythm: Rhythm) -> float:
    """Quarter notes per beat of the beat grid (1.5 for dotted-quarter beats), snapped to common values."""
    if len(rhythm.beat_times) < 2:
        return 1.0
    ratio = float(np.median(np.diff(rhythm.beat_times))) * rhythm.bpm / 60.0
    choices = np.array([0.5, 1.0, 1.5, 2.0])
    return float(choices[np.abs(choices - ratio).argmin()])


def analyze_piece(piece: Piece, metadata: dict | None = None, rhythm: Rhythm | None = None) -> dict:
    """Every feature of a whole piece as one flat dict (see docs/annotate-interfaces.md for the keys).

    `rhythm` may be passed when already computed (analyze_with_clips shares it with the clips)."""
    rhythm = rhythm or analyze_rhythm(piece)
    return _describe(piece, rhythm, None, metadata)


def clip_windows(piece: Piece, n: int = 3, length: float = CLIP_LENGTH) -> list[tuple[str, float, float]]:
    """Up to `n` windows of `length` seconds at the start, middle and end of the music (as MIDI-LLaMA).

    The music spans first onset to last note-off. A piece no longer than one window gives one window
    (all of it); one shorter than n windows gives the start and end windows, overlapping if need be,
    unless they would nearly coincide."""
    if not len(piece):
        return []
    t0 = float(piece.start.min())
    t1 = float(piece.end.max())
    total = t1 - t0
    if total <= length:
        return [("start", t0, t1)]
    starts = {"start": t0, "middle": t0 + (total - length) / 2, "end": t1 - length}
    names = ["start", "end"] if n == 2 or total < 2 * length else ["start", "middle", "end"]
    if n == 1:
        names = ["start"]
    return [(name, round(starts[name], 3), round(starts[name] + length, 3)) for name in names]


def analyze_clips(piece: Piece, metadata: dict | None = None, rhythm: Rhythm | None = None) -> list[dict]:
    """One dict per clip window, each described like a piece (times relative to the clip start), plus
    `clip` ("start"/"middle"/"end"), `clip_start` and `clip_end` (seconds in the piece)."""
    rhythm = rhythm or analyze_rhythm(piece)
    out = []
    start = piece.start
    for name, a, b in clip_windows(piece):
        clip = piece.select((start >= a) & (start < b))
        if not len(clip):
            continue
        d = _describe(clip, rhythm, (a, b), metadata)
        d.update({"clip": name, "clip_start": a, "clip_end": b})
        out.append(d)
    return out


def analyze_with_clips(piece: Piece, metadata: dict | None = None) -> tuple[dict, list[dict]]:
    """analyze_piece and analyze_clips sharing one rhythm analysis (what a dataset build wants)."""
    rhythm = analyze_rhythm(piece)
    return analyze_piece(piece, metadata, rhythm), analyze_clips(piece, metadata, rhythm)
