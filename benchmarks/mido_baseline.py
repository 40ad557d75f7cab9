"""The naive path the AMT reference takes, written here with mido, as a baseline for benchmarks.

Same rules as the reference (`midi_to_events`, `events_to_midi`): mido's merged message stream with
float seconds, per-channel programs, FIFO note pairing, 25-tick unclosed notes; decoding writes one
track per instrument at 50 ticks per beat. Run as a script it encodes the files given and prints
how many events it made, so benchmarks can time it as a whole process.
"""

from __future__ import annotations

import sys
from collections import defaultdict

import mido


def midi_to_events(path: str) -> list[int]:
    midi = mido.MidiFile(path)
    notes: list[list] = []
    open_notes: dict[tuple, list[int]] = defaultdict(list)
    programs: dict[int, int] = defaultdict(int)
    seconds = 0.0
    for msg in midi:
        seconds += msg.time
        if msg.type == "program_change":
            programs[msg.channel] = msg.program
        elif msg.type in ("note_on", "note_off"):
            instrument = 128 if msg.channel == 9 else programs[msg.channel]
            key = (instrument, msg.note, msg.channel)
            if msg.type == "note_on" and msg.velocity > 0:
                open_notes[key].append(len(notes))
                notes.append([seconds, -1, instrument, msg.note])
            elif open_notes[key]:
                note = notes[open_notes[key].pop(0)]
                note[1] = round(100 * (seconds - note[0]))
    events: list[int] = []
    for onset, duration, instrument, pitch in notes:
        duration = 25 if duration == -1 else min(duration, 999)
        events += [round(100 * onset), 10000 + duration, 11000 + 128 * instrument + pitch]
    return events


def events_to_midi(events: list[int]) -> mido.MidiFile:
    mid = mido.MidiFile(ticks_per_beat=50)
    timeline: dict[tuple, list] = defaultdict(list)
    for time, dur, note in zip(events[0::3], events[1::3], events[2::3]):
        instrument, pitch = divmod(note - 11000, 128)
        timeline[(time, 0)].append((instrument, pitch))
        timeline[(time + dur - 10000, 1)].append((instrument, pitch))
    tracks: dict[int, list] = {}
    for (time, off), items in sorted(timeline.items()):
        for instrument, pitch in items:
            if instrument not in tracks:
                channel = 9 if instrument == 128 else len(tracks) + (len(tracks) >= 9)
                track = mido.MidiTrack()
                track.append(mido.Message("program_change", channel=channel, program=instrument % 128))
                mid.tracks.append(track)
                tracks[instrument] = [track, 0, channel]
            track, last, channel = tracks[instrument]
            kind = "note_off" if off else "note_on"
            track.append(mido.Message(kind, note=pitch, channel=channel, velocity=72, time=time - last))
            tracks[instrument][1] = time
    return mid


if __name__ == "__main__":
    total = 0
    for path in sys.argv[1:]:
        try:
            total += len(midi_to_events(path)) // 3
        except Exception as e:  # a benchmark run keeps going, as the reference's preprocessing does
            print(f"{path}: {e}", file=sys.stderr)
    print(total)
