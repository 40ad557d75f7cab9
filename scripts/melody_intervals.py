"""Melodic motion of folders of MIDI files: the top voice's intervals, as a listener would notice them.

For each file with at least four pitched notes at two or more onsets, the highest non-drum note at each
onset forms the melody line; the medians over files of its repeated-note, step (1-2 semitones) and leap (5+
semitones) shares, distinct pitch classes, the longest run of one pitch and the median note length (s) are
printed per folder.

    python scripts/melody_intervals.py GENERATED_DIR REFERENCE_DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from midilm.music.gm import DRUMS
from midilm.music.midi_io import read_midi


def melody_stats(path: Path) -> dict[str, float] | None:
    piece = read_midi(path, allow_empty=True)
    pitched = piece.program != DRUMS
    if pitched.sum() < 4:
        return None
    top: dict[int, int] = {}
    for onset, pitch in zip(piece.start_tick[pitched].tolist(), piece.pitch[pitched].tolist()):
        top[onset] = max(top.get(onset, -1), pitch)
    line = np.array([top[t] for t in sorted(top)])
    if len(line) < 2:  # one chord: no interval to count
        return None
    steps = np.abs(np.diff(line))
    run = longest = 1
    for a, b in zip(line[:-1], line[1:]):
        run = run + 1 if a == b else 1
        longest = max(longest, run)
    lengths = piece.end[pitched] - piece.start[pitched]
    return {"repeat": float((steps == 0).mean()), "step": float(((steps >= 1) & (steps <= 2)).mean()),
            "leap": float((steps >= 5).mean()), "pitch_classes": float(len(set((piece.pitch[pitched] % 12).tolist()))),
            "longest_repeat": float(longest), "note_length": float(np.median(lengths))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    for folder in ap.parse_args().folders:
        rows = [r for r in map(melody_stats, sorted(folder.glob("*.mid"))) if r]
        if not rows:
            print(f"{folder}: no file with four pitched notes")
            continue
        medians = " ".join(f"{k}={np.median([r[k] for r in rows]):.2f}" for k in rows[0])
        print(f"{folder} n={len(rows)} {medians}")


if __name__ == "__main__":
    main()
