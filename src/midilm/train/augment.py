"""Augmentations that teach a text-to-MIDI model to follow its prompt with little data.

Each changes the music and rewrites the analysis the caption is written from, so that caption and music
still agree: transposition (key and chords move), tempo scaling (bpm and tempo words change),
instrument reassignment by role (melody, bass, accompaniment keep their role, change their sound).
Events are raw AMT triplets (time, 10000 + duration, 11000 + 128 * instrument + pitch).
"""

from __future__ import annotations

import random
import re

import numpy as np

from midilm.codecs.amt.vocab import DRUMS, DUR_OFFSET, MAX_DUR, NOTE_OFFSET
from midilm.music.gm import family, plain_name, program_name

PITCH_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
_PC = {n: i for i, n in enumerate(PITCH_NAMES)} | {"Db": 1, "D#": 3, "Gb": 6, "G#": 8, "A#": 10, "Cb": 11,
                                                    "E#": 5, "Fb": 4, "B#": 0}

# sounds that can take each role (GM programs); a reassignment draws from the role's pool. The pools also
# hold the 23 programs that play no note in the training data (UNPLAYED_PROGRAMS): only a reassignment
# trains their note rows, so a prompt naming a fiddle or an accordion does not sample untrained rows.
UNPLAYED_PROGRAMS = (9, 12, 15, 20, 21, 22, 59, 69, 82, 83, 94, 101, 106, 108, 109, 110, 111, 112, 115, 117, 121,
                     124, 125)  # fmt: skip
ROLE_POOLS = {
    "melody": [0, 4, 11, 24, 26, 40, 56, 64, 65, 66, 68, 71, 73, 74, 80, 81, 105,
               9, 12, 22, 59, 69, 82, 83, 106, 108, 109, 110, 111, 112, 121, 124, 125],
    "bass": [32, 33, 34, 35, 38, 42, 43, 58, 70],
    "accompaniment": [0, 1, 4, 5, 6, 16, 19, 24, 25, 27, 46, 48, 49, 52, 61, 88, 89, 15, 20, 21, 94, 101, 115, 117],
}  # fmt: skip


def _triplets(events) -> np.ndarray:
    return np.asarray(events, dtype=np.int64).reshape(-1, 3).copy()


def transpose_events(events, semitones: int) -> list[int]:
    """Shift every pitched note; notes pushed outside 0..127 are dropped. Drums stay."""
    t = _triplets(events)
    note = t[:, 2] - NOTE_OFFSET
    inst, pitch = note // 128, note % 128
    melodic = inst != DRUMS
    new_pitch = np.where(melodic, pitch + semitones, pitch)
    keep = (new_pitch >= 0) & (new_pitch <= 127)
    t[:, 2] = NOTE_OFFSET + inst * 128 + new_pitch
    return t[keep].reshape(-1).tolist()


def scale_tempo(events, factor: float) -> list[int]:
    """Stretch time by `factor` (> 1 slower). Onsets and durations scale; durations clip at 9.99 s."""
    t = _triplets(events)
    t[:, 0] = np.round(t[:, 0] * factor).astype(np.int64)
    dur = np.minimum(np.round((t[:, 1] - DUR_OFFSET) * factor), MAX_DUR - 1).astype(np.int64)
    t[:, 1] = DUR_OFFSET + dur
    return t.reshape(-1).tolist()


def instrument_roles(events) -> dict[int, str]:
    """Melody (highest mean pitch), bass (lowest), accompaniment (the rest) among pitched instruments."""
    t = _triplets(events)
    note = t[:, 2] - NOTE_OFFSET
    inst, pitch = note // 128, note % 128
    programs = [int(p) for p in np.unique(inst) if p != DRUMS]
    if not programs:
        return {}
    means = {p: float(pitch[inst == p].mean()) for p in programs}
    ordered = sorted(programs, key=lambda p: means[p])
    roles = {p: "accompaniment" for p in programs}
    if len(ordered) >= 2:
        roles[ordered[0]] = "bass" if means[ordered[0]] < 52 else "accompaniment"
    roles[ordered[-1]] = "melody"
    return roles


def reassign_instruments(events, rng: random.Random) -> tuple[list[int], dict[int, int]]:
    """Give each pitched instrument another sound of its role; returns events and the mapping."""
    roles = instrument_roles(events)
    mapping: dict[int, int] = {}
    used: set[int] = set()
    for prog, role in roles.items():
        choices = [p for p in ROLE_POOLS[role] if p not in used] or ROLE_POOLS[role]
        mapping[prog] = rng.choice(choices)
        used.add(mapping[prog])
    t = _triplets(events)
    note = t[:, 2] - NOTE_OFFSET
    inst, pitch = note // 128, note % 128
    new_inst = np.array([mapping.get(int(i), int(i)) for i in inst], dtype=np.int64) if len(inst) else inst
    t[:, 2] = NOTE_OFFSET + new_inst * 128 + pitch
    return t.reshape(-1).tolist(), mapping


# --- rewriting the analysis ---------------------------------------------------------------------------


def _shift_name(name: str, semitones: int) -> str:
    return PITCH_NAMES[(_PC[name] + semitones) % 12]


def shift_key(key: str | None, semitones: int) -> str | None:
    if not key:
        return key
    tonic, _, mode = key.partition(" ")
    return f"{_shift_name(tonic, semitones)} {mode}" if tonic in _PC else key


_CHORD = re.compile(r"^([A-G][#b]?)(.*)$")


def shift_chord(label: str, semitones: int) -> str:
    """Shift a chord label, Harte (`G:maj`, `A:min7/3`) or plain (`Am7`)."""
    root, sep, rest = label.partition(":") if ":" in label else ("", "", "")
    if sep:
        return f"{_shift_name(root, semitones)}:{rest}" if root in _PC else label
    m = _CHORD.match(label)
    if not m or m.group(1) not in _PC:
        return label
    return _shift_name(m.group(1), semitones) + m.group(2)


def transpose_analysis(a: dict, semitones: int) -> dict:
    out = dict(a)
    out["key"] = shift_key(a.get("key"), semitones)
    if out.get("key"):
        out["key_tonic"] = out["key"].split(" ")[0]
    if a.get("chords"):
        out["chords"] = [{**c, "label": shift_chord(c["label"], semitones)} for c in a["chords"]]
    if a.get("chord_pattern"):
        out["chord_pattern"] = [shift_chord(c, semitones) for c in a["chord_pattern"]]
    if a.get("key_segments"):
        out["key_segments"] = [{**s, "key": shift_key(s.get("key"), semitones)} for s in a["key_segments"]]
    return out


def scale_tempo_analysis(a: dict, factor: float) -> dict:
    from midilm.annotate.rhythm import duration_word, tempo_word, tempo_word_simple

    out = dict(a)
    if a.get("bpm"):
        out["bpm"] = float(a["bpm"]) / factor
        out["tempo_word"] = tempo_word(out["bpm"])
        out["tempo_word_simple"] = tempo_word_simple(out["bpm"])
    if a.get("duration"):
        out["duration"] = float(a["duration"]) * factor
        out["duration_word"] = duration_word(out["duration"])
    return out


def reassign_analysis(a: dict, mapping: dict[int, int], events_after) -> dict:
    out = dict(a)
    t = _triplets(events_after)
    inst = (t[:, 2] - NOTE_OFFSET) // 128
    values, counts = np.unique(inst, return_counts=True)
    programs = [int(v) for v in values[np.argsort(-counts, kind="stable")]]
    out["instruments"] = [program_name(p) for p in programs]
    out["instrument_words"] = list(dict.fromkeys(plain_name(p) for p in programs))
    out["families"] = list(dict.fromkeys(family(p) for p in programs))
    return out
