"""A small piece written in code (no data files needed): for demos, smoke tests and `midilm example`."""

from __future__ import annotations

import numpy as np

from midilm.music.gm import DRUMS
from midilm.music.piece import KeySignature, Piece, TimeSignature, Track
from midilm.music.tempo import TempoMap

# I - vi - IV - V in C major, two bars each, as (root, third, fifth) MIDI pitches
_PROGRESSION = [(60, 64, 67), (57, 60, 64), (53, 57, 60), (55, 59, 62)]
_MELODY = [72, 71, 69, 67, 69, 71, 72, 74, 76, 74, 72, 71, 72, 69, 67, 65,
           64, 65, 67, 69, 67, 65, 64, 62, 64, 67, 72, 71, 69, 67, 71, 72]  # fmt: skip


def example_piece(bpm: float = 100.0, ticks_per_beat: int = 480) -> Piece:
    """Eight bars of 4/4 in C major: piano melody and chords, electric bass, drums."""
    q = ticks_per_beat
    rows: list[tuple[int, int, int, int, int, int]] = []  # start, end, pitch, velocity, program, track
    for bar in range(8):
        chord = _PROGRESSION[(bar // 2) % 4]
        t0 = bar * 4 * q
        for beat in range(4):
            # piano melody in quarter notes, chords on beats 1 and 3, bass on every beat
            rows.append((t0 + beat * q, t0 + (beat + 1) * q - q // 8, _MELODY[bar * 4 + beat], 88, 0, 0))
            if beat % 2 == 0:
                rows += [(t0 + beat * q, t0 + (beat + 2) * q - q // 8, p, 64, 0, 0) for p in chord]
            rows.append((t0 + beat * q, t0 + beat * q + q // 2, chord[0] - 24, 96, 33, 1))
            rows.append((t0 + beat * q, t0 + beat * q + q // 4, 36 if beat % 2 == 0 else 38, 100, DRUMS, 2))
            for half in range(2):
                rows.append((t0 + beat * q + half * q // 2, t0 + beat * q + half * q // 2 + q // 8, 42, 70,
                             DRUMS, 2))
    a = np.array(rows, dtype=np.int64)
    return Piece(
        ticks_per_beat, a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5],
        tracks=[Track("Piano", 0), Track("Bass", 33), Track("Drums", DRUMS)],
        tempo_map=TempoMap.constant(bpm, ticks_per_beat), time_signatures=[TimeSignature(0, 4, 4)],
        key_signatures=[KeySignature(0, 0, False)],
    )
