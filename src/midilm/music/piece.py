"""A piece of music as plain arrays: one note list plus tempo map, meters and key signatures."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from midilm.music.gm import DRUMS, plain_name, program_name
from midilm.music.tempo import TempoMap

NOTE_FIELDS = ("start_tick", "end_tick", "pitch", "velocity", "program", "track")

_MAJOR_SHARP = ["C", "G", "D", "A", "E", "B", "F#", "C#"]
_MAJOR_FLAT = ["C", "F", "Bb", "Eb", "Ab", "Db", "Gb", "Cb"]
_MINOR_SHARP = ["A", "E", "B", "F#", "C#", "G#", "D#", "A#"]
_MINOR_FLAT = ["A", "D", "G", "C", "F", "Bb", "Eb", "Ab"]


def key_name(sharps: int, minor: bool) -> str:
    """'Eb major' / 'F# minor' from a key signature (sharps > 0, flats < 0)."""
    sharps = max(-7, min(7, int(sharps)))
    if minor:
        tonic = _MINOR_SHARP[sharps] if sharps >= 0 else _MINOR_FLAT[-sharps]
    else:
        tonic = _MAJOR_SHARP[sharps] if sharps >= 0 else _MAJOR_FLAT[-sharps]
    return f"{tonic} {'minor' if minor else 'major'}"


def shift_pitches(pitch: np.ndarray, semitones: int) -> np.ndarray:
    """MIDI pitches moved by `semitones`; one pushed out of 0..127 moves back in by whole octaves (so the
    pitch class is always shifted)."""
    p = np.asarray(pitch, dtype=np.int64) + int(semitones)
    p = np.where(p > 127, p - 12 * ((p - 116) // 12), p)
    return np.where(p < 0, p + 12 * ((11 - p) // 12), p)


def shift_key_signature(sharps: int, semitones: int) -> int:
    """The key signature (sharps > 0, flats < 0, in -6..5) of a key moved by `semitones`."""
    pc = (int(sharps) * 7 + int(semitones)) % 12  # tonic of the relative major; 7 * 7 = 1 (mod 12)
    s = pc * 7 % 12
    return s - 12 if s > 5 else s


@dataclass(frozen=True)
class TimeSignature:
    tick: int
    numerator: int
    denominator: int

    def __str__(self) -> str:
        return f"{self.numerator}/{self.denominator}"


@dataclass(frozen=True)
class KeySignature:
    tick: int
    sharps: int
    minor: bool

    @property
    def name(self) -> str:
        return key_name(self.sharps, self.minor)


@dataclass(frozen=True)
class Track:
    name: str
    program: int  # 0-127, or 128 for drums

    @property
    def is_drum(self) -> bool:
        return self.program == DRUMS


@dataclass
class Piece:
    """Notes (struct of arrays, sorted by onset then pitch) with everything needed to place them in time.

    Times are stored in ticks; `start`/`end` (seconds) and `start_beat`/`end_beat` (quarter notes)
    are derived through the tempo map. `program` is the GM program, 128 for drums.
    """

    ticks_per_beat: int
    start_tick: np.ndarray
    end_tick: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray
    program: np.ndarray
    track: np.ndarray
    tracks: list[Track] = field(default_factory=list)
    tempo_map: TempoMap | None = None
    time_signatures: list[TimeSignature] = field(default_factory=list)
    key_signatures: list[KeySignature] = field(default_factory=list)
    path: str | None = None

    def __post_init__(self) -> None:
        if self.tempo_map is None:
            self.tempo_map = TempoMap.from_changes(self.ticks_per_beat, [])
        order = np.lexsort((self.pitch, self.start_tick))
        for name in NOTE_FIELDS:
            setattr(self, name, np.ascontiguousarray(np.asarray(getattr(self, name))[order]))

    def __len__(self) -> int:
        return len(self.pitch)

    @property
    def start(self) -> np.ndarray:
        return self.tempo_map.seconds(self.start_tick)

    @property
    def end(self) -> np.ndarray:
        return self.tempo_map.seconds(self.end_tick)

    @property
    def start_beat(self) -> np.ndarray:
        return self.start_tick / self.ticks_per_beat

    @property
    def end_beat(self) -> np.ndarray:
        return self.end_tick / self.ticks_per_beat

    @property
    def duration(self) -> float:
        """Length in seconds: the last note-off."""
        return float(self.end.max()) if len(self) else 0.0

    @property
    def programs(self) -> list[int]:
        """Programs by number of notes, most first."""
        if not len(self):
            return []
        values, counts = np.unique(self.program, return_counts=True)
        return [int(v) for v in values[np.argsort(-counts, kind="stable")]]

    def instrument_names(self, plain: bool = False) -> list[str]:
        return [plain_name(p) if plain else program_name(p) for p in self.programs]

    @property
    def time_signature(self) -> TimeSignature:
        return self.time_signatures[0] if self.time_signatures else TimeSignature(0, 4, 4)

    @property
    def bpm(self) -> float:
        """The first tempo (MidiCaps takes the first set_tempo)."""
        return float(self.tempo_map.bpm[0])

    def select(self, mask: np.ndarray) -> Piece:
        """A copy holding only the notes where `mask` is true."""
        kwargs = {name: getattr(self, name)[mask] for name in NOTE_FIELDS}
        return Piece(self.ticks_per_beat, **kwargs, tracks=list(self.tracks), tempo_map=self.tempo_map,
                     time_signatures=list(self.time_signatures), key_signatures=list(self.key_signatures),
                     path=self.path)

    def clip_seconds(self, start: float, end: float) -> Piece:
        """Notes starting in [start, end) (times unchanged)."""
        s = self.start
        return self.select((s >= start) & (s < end))

    def excerpt(self, start: float, end: float) -> Piece:
        """Notes starting in [start, end) as a piece of their own: moved so the bar holding `start` begins
        at tick 0 (bar lines stay bar lines), with the tempo, meter and key in effect there."""
        clip = self.clip_seconds(start, end)
        t0 = int(self.tempo_map.ticks_at(max(start, 0.0)))
        ts = [t for t in self.time_signatures if t.tick <= t0]
        ts = ts[-1] if ts else TimeSignature(0, 4, 4)
        bar = max(self.ticks_per_beat * 4 * ts.numerator // ts.denominator, 1)
        offset = ts.tick + (t0 - ts.tick) // bar * bar

        def moved(items: list) -> list:
            # the item in effect at `offset` moves to tick 0; later ones keep their distance
            before = [x for x in items if x.tick <= offset]
            head = [replace(before[-1], tick=0)] if before else []
            return head + [replace(x, tick=x.tick - offset) for x in items if x.tick > offset]

        tm = self.tempo_map
        i = max(int(np.searchsorted(tm.ticks, offset, side="right")) - 1, 0)
        changes = [(0, int(tm.mspq[i]))] + [(int(t) - offset, int(m)) for t, m in zip(tm.ticks, tm.mspq) if t > offset]
        return Piece(self.ticks_per_beat, clip.start_tick - offset, clip.end_tick - offset, clip.pitch,
                     clip.velocity, clip.program, clip.track, tracks=list(self.tracks),
                     tempo_map=TempoMap.from_changes(self.ticks_per_beat, changes),
                     time_signatures=moved(self.time_signatures), key_signatures=moved(self.key_signatures),
                     path=self.path)


    def transposed(self, semitones: int) -> Piece:
        """A copy with every pitched note and the key signatures moved by `semitones` (drums stay)."""
        pitch = np.where(self.program == DRUMS, self.pitch, shift_pitches(self.pitch, semitones))
        keys = [replace(k, sharps=shift_key_signature(k.sharps, semitones)) for k in self.key_signatures]
        return replace(self, pitch=pitch, key_signatures=keys)


def empty_piece(ticks_per_beat: int = 480) -> Piece:
    z = np.zeros(0, dtype=np.int64)
    return Piece(ticks_per_beat, z, z, z, z, z, z)
