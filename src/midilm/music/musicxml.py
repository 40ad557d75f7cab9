"""Read MusicXML (.musicxml/.xml, compressed .mxl) straight into a `Piece`, without music21.

music21 turns a score into MIDI at about 0.25 CPU s per KB of .mxl, two thirds of it expanding repeats
(benchmarks/RESULTS.md). This reader walks the partwise XML once and keeps what sounds:

- parts with their instruments: the GM program from `<midi-instrument>` (1-based `<midi-program>`), or,
  where that is missing or a notation program's placeholder ("Instrument 1" on program 1), from the
  instrument or part name (voices such as "Soprano" or "Bass" sing: Choir Aahs); channel 10 or unpitched
  notes are drums;
- time from `<divisions>`, `<duration>`, `<backup>`, `<forward>` and `<chord/>`, so voices and staves line
  up; a measure lasts as long as its longest voice (pickups and short bars stay as written);
- pitch from step, alter and octave, moved to sounding pitch by `<transpose>`;
- tied notes joined (`<tie>` or `<tied>`), grace notes left out (they take no time in the score), cue
  notes taking their time but not sounding;
- tempo from `<sound tempo>` (else `<metronome>`), time and key signatures from the first part that has
  them, velocity from dynamics marks (music21's loudness of each mark);
- repeats and jumps (da capo, segno) played once as written.

`score-timewise` files are refused with MusicXmlError (convert them with music21).
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np

from midilm.errors import MidilmError
from midilm.music.gm import DRUMS, program_from_word
from midilm.music.piece import KeySignature, Piece, TimeSignature, Track
from midilm.music.tempo import TempoMap

TICKS_PER_BEAT = 480
MAX_XML_BYTES = 256 << 20  # a decompressed .mxl beyond this is refused (zip bombs)
DEFAULT_VELOCITY = 90  # music21's velocity for notes without a dynamics mark (volume 0.7086 of 127)

# music21's dynamics.dynamicStrToScalar times 127: one loudness per mark
_DYNAMICS = {"pppp": 13, "ppp": 19, "pp": 32, "p": 44, "mp": 57, "mf": 70, "f": 89, "fp": 95, "sf": 108,
             "ff": 108, "fff": 114, "ffff": 121}
_STEP = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_BEAT_UNIT = {"whole": Fraction(4), "half": Fraction(2), "quarter": Fraction(1), "eighth": Fraction(1, 2),
              "16th": Fraction(1, 4), "32nd": Fraction(1, 8), "breve": Fraction(8)}


class MusicXmlError(MidilmError, ValueError):
    """A MusicXML file could not be read; the message names the file."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else str(path)
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"cannot read MusicXML {where}{reason}")


@dataclass
class _Part:
    name: str
    instruments: dict[str, int] = field(default_factory=dict)  # score-instrument id -> program
    unpitched: dict[str, int] = field(default_factory=dict)  # score-instrument id -> drum key
    default: int = 0


def musicxml_bytes(source: str | Path | bytes, path: str | None = None) -> bytes:
    """The XML text of a .musicxml/.xml file or of the root file of a compressed .mxl (path or bytes)."""
    data = Path(source).read_bytes() if not isinstance(source, (bytes, bytearray)) else bytes(source)
    path = path or (None if isinstance(source, (bytes, bytearray)) else str(source))
    if not data.startswith(b"PK"):
        return data
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
            root = None
            if "META-INF/container.xml" in names:
                container = ET.fromstring(z.read("META-INF/container.xml"))
                rootfile = container.find(".//rootfile")
                root = rootfile.get("full-path") if rootfile is not None else None
            if root not in names:
                root = next((n for n in names if not n.startswith("META-INF/")
                             and n.lower().endswith((".xml", ".musicxml"))), None)
            if root is None:
                raise MusicXmlError(path, "the .mxl archive holds no MusicXML file")
            if z.getinfo(root).file_size > MAX_XML_BYTES:
                raise MusicXmlError(path, f"{root} is over {MAX_XML_BYTES} bytes")
            return z.read(root)
    except (zipfile.BadZipFile, KeyError, ET.ParseError) as e:
        raise MusicXmlError(path, f"not a valid .mxl archive ({e})") from None


def read_musicxml(source: str | Path | bytes, path: str | None = None) -> Piece:
    """Read a MusicXML score (path or bytes; .mxl archives too) into a Piece of 480 ticks per quarter.

    Raises MusicXmlError naming the file when it is not partwise MusicXML or holds no notes.
    """
    path = path or (None if isinstance(source, (bytes, bytearray)) else str(source))
    try:
        root = ET.fromstring(musicxml_bytes(source, path))
    except ET.ParseError as e:
        raise MusicXmlError(path, f"not well-formed XML ({e})") from None
    except OSError as e:
        raise MusicXmlError(path, e.strerror or str(e)) from None
    if _local(root.tag) != "score-partwise":
        raise MusicXmlError(path, f"<{_local(root.tag)}> is not supported (only score-partwise)")
    _strip_namespaces(root)
    parts_info = _part_list(root)
    reader = _Reader()
    for p_el in root.findall("part"):
        info = parts_info.get(p_el.get("id", ""), _Part(name=p_el.get("id", "")))
        reader.read_part(p_el, info)
    if not reader.notes:
        raise MusicXmlError(path, "contains no notes")
    return reader.piece(path)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _strip_namespaces(root: ET.Element) -> None:
    if root.tag.startswith("{"):
        for el in root.iter():
            el.tag = _local(el.tag)


def _text(el: ET.Element | None, path: str, default: str | None = None) -> str | None:
    found = el.find(path) if el is not None else None
    return found.text.strip() if found is not None and found.text else default


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


# instrument words of scores (Italian, German, French) beside gm.program_from_word's English ones; a classical
# score's organ is a church organ and its guitar a nylon-string one
_SCORE_WORDS = {
    "violino": 40, "violini": 40, "violine": 40, "violon": 40, "viole": 41, "bratsche": 41, "violoncello": 42,
    "violoncelli": 42, "violoncelle": 42, "cello": 42, "violone": 43, "contrabasso": 43, "kontrabass": 43,
    "double bass": 43, "contrabass": 43, "organ": 19, "organo": 19, "orgel": 19, "orgue": 19, "guitar": 24,
    "chitarra": 24, "harpsichord": 6, "cembalo": 6, "clavicembalo": 6, "clavecin": 6, "piano": 0,
    "pianoforte": 0, "fortepiano": 0, "klavier": 0, "flauto": 73, "flöte": 73, "flute": 73, "oboe": 68,
    "hautbois": 68, "clarinetto": 71, "klarinette": 71, "fagotto": 70, "fagott": 70, "basson": 70, "corno": 60,
    "horn": 60, "cor": 60, "tromba": 56, "trompete": 56, "trompette": 56, "trombone": 57, "posaune": 57,
    "bass": 43, "basso": 43, "timpani": 47, "pauken": 47, "arpa": 46, "harfe": 46, "harpe": 46, "strings": 48,
}
# sung parts (GM has no voice per range: every voice sings Choir Aahs); "bass" and "alto" also name
# instruments, so they sing only beside another sung part
_SUNG = {"soprano", "sopran", "mezzo", "mezzo-soprano", "contralto", "tenor", "tenore", "baritone", "bariton",
         "cantus", "canto", "altus", "quintus", "quinto", "sextus", "sesto", "superius", "discantus", "voice",
         "voce", "vox", "stimme", "choir", "chorus", "coro", "chor", "vocals", "vocal", "singstimme", "s", "t"}
_SUNG_IF_CHOIR = {"alto", "bass", "basso", "bassus", "a", "b"}
CHOIR = 52


_NOT_NAMES = {"i", "ii", "iii", "iv", "v", "vi", "in", "solo", "and", "und", "e", "c", "d", "f", "g", "bb", "eb",
              "ab", "db", "flat", "sharp"}


def _words(name: str) -> list[str]:
    """Lower-case words of a part or instrument name without numbers, roman numerals, keys of transposing
    instruments and joining words ("Violin II" -> ["violin"], "Bb Clarinet" -> ["clarinet"],
    "voice.soprano" -> ["voice", "soprano"])."""
    text = re.sub(r"[\d.,:;()\[\]/-]+", " ", name.lower())
    return [w for w in text.split() if w not in _NOT_NAMES]


def _name_program(name: str, choir: bool) -> int | None:
    """The GM program a part or instrument name (or an <instrument-sound> id) names, None when it names none."""
    words = _words(name)
    if not words:
        return None
    if words[0] in _SUNG or (choir and words[0] in _SUNG_IF_CHOIR):
        return CHOIR
    if len(words) == 1 and words[0] in ("a", "b"):
        return None
    phrase = " ".join(words)
    for candidate in (phrase, *words):
        if candidate in _SCORE_WORDS:
            return _SCORE_WORDS[candidate]
        try:
            program = program_from_word(candidate)
        except ValueError:
            continue
        if program != DRUMS or candidate in ("drums", "drum", "percussion", "drum kit"):
            return program
    return None


def program_for_part(part_name: str, instrument_names: list[str], sounds: list[str], midi_program: int | None,
                     choir: bool = False) -> int:
    """The GM program of a part. The part name comes first ("Violin I" under a "String Ensemble 1" sound,
    "Canto" under a grand piano in some corpus files, "Soprano" under Finale's "Instrument 1"), then the
    MusicXML sound id ("strings.violin"), then the 1-based <midi-program>, then the instrument name, else piano.
    `choir`: the score has sung parts, so "Alto" and "Bass" sing too."""
    for name in (part_name, *(s.replace(".", " ") for s in sounds)):
        program = _name_program(name or "", choir)
        if program is not None:
            return program
    if midi_program is not None and 1 <= midi_program <= 128:
        return midi_program - 1
    for name in instrument_names:
        program = _name_program(name or "", choir)
        if program is not None:
            return program
    return 0


def sung(names: list[str]) -> bool:
    """Whether a score with these part names has sung parts (then "Alto" and "Bass" sing too)."""
    return any((_words(n) or [""])[0] in _SUNG for n in names)


def part_programs(names: list[str], midi_programs: list[int | None]) -> list[int]:
    """Programs of a score's parts from their names and 1-based MIDI programs (None where unknown)."""
    choir = sung(names)
    return [program_for_part(n, [], [], m, choir) for n, m in zip(names, midi_programs)]


def _part_list(root: ET.Element) -> dict[str, _Part]:
    score_parts = root.findall("part-list/score-part")
    names = {sp.get("id", ""): _text(sp, "part-name") or _text(sp, "part-abbreviation") or "" for sp in score_parts}
    choir = sung(list(names.values()))
    out: dict[str, _Part] = {}
    for sp in score_parts:
        name = names[sp.get("id", "")]
        insts = {si.get("id", ""): si for si in sp.findall("score-instrument")}
        part = _Part(name=name)
        for inst_id, mi in ([(mi.get("id", ""), mi) for mi in sp.findall("midi-instrument")]
                            or [(i, None) for i in insts] or [("", None)]):
            si = insts.get(inst_id)
            channel = _number(_text(mi, "midi-channel"))
            prog = _number(_text(mi, "midi-program"))
            unpitched = _number(_text(mi, "midi-unpitched"))
            sounds = [_text(si, "instrument-sound") or ""] if si is not None else []
            inst_names = [_text(si, "instrument-name") or ""] if si is not None else []
            if channel == 10 or unpitched is not None:
                part.instruments[inst_id] = DRUMS
                if unpitched is not None:
                    part.unpitched[inst_id] = int(unpitched) - 1
            else:
                part.instruments[inst_id] = program_for_part(name, inst_names, sounds,
                                                             None if prog is None else int(prog), choir)
        part.default = next(iter(part.instruments.values()))
        out[sp.get("id", "")] = part
    return out


class _Reader:
    """Collects the notes of all parts; tempo, meter and key from the parts that state them."""

    def __init__(self) -> None:
        self.notes: list[list[int]] = []  # start, end, pitch, velocity, program, track
        self.tracks: list[Track] = []
        self.track_ids: dict[tuple[int, int], int] = {}
        self.tempos: dict[int, int] = {}
        self.time_sigs: dict[int, TimeSignature] = {}
        self.key_sigs: dict[int, KeySignature] = {}
        self.meter_part: int | None = None
        self.n_parts = 0

    @staticmethod
    def tick(q: Fraction) -> int:
        return round(q * TICKS_PER_BEAT)

    def track(self, part_idx: int, name: str, program: int) -> int:
        key = (part_idx, program)
        if key not in self.track_ids:
            self.track_ids[key] = len(self.tracks)
            self.tracks.append(Track(name, program))
        return self.track_ids[key]

    def read_part(self, part_el: ET.Element, info: _Part) -> None:
        part_idx = self.n_parts
        self.n_parts += 1
        divisions = Fraction(1)
        transpose = 0
        velocity = DEFAULT_VELOCITY
        measure_start = Fraction(0)
        open_ties: dict[int, int] = {}  # sounding pitch -> index of the note a tie continues
        states_meter = self.meter_part is None or self.meter_part == part_idx
        bar = Fraction(4)  # quarters per bar of this part's time signature; music21's default is 4/4
        for measure in part_el.iterfind("measure"):
            cursor = measure_start
            longest = measure_start
            last_onset = measure_start
            sounding = False  # any note or rest: a measure without either lasts a bar (music21 fills it)
            for el in measure:
                tag = el.tag
                if tag == "note":
                    dur_text = _text(el, "duration")
                    dur = Fraction(int(float(dur_text))) / divisions if dur_text else Fraction(0)
                    if el.find("grace") is not None:
                        continue
                    sounding = True
                    chord = el.find("chord") is not None
                    onset = last_onset if chord else cursor
                    if not chord:
                        last_onset = onset
                        cursor = onset + dur
                    longest = max(longest, onset + dur)
                    if el.find("rest") is not None or el.find("cue") is not None or dur <= 0:
                        continue
                    self._note(el, info, part_idx, onset, dur, transpose, velocity, open_ties)
                elif tag == "backup":
                    cursor = max(measure_start, cursor - Fraction(int(float(_text(el, "duration") or 0))) / divisions)
                elif tag == "forward":
                    cursor += Fraction(int(float(_text(el, "duration") or 0))) / divisions
                    longest = max(longest, cursor)
                elif tag == "attributes":
                    div = _number(_text(el, "divisions"))
                    if div and div > 0:
                        divisions = Fraction(int(div))
                    tr = el.find("transpose")
                    if tr is not None:
                        transpose = int(_number(_text(tr, "chromatic")) or 0) + 12 * int(
                            _number(_text(tr, "octave-change")) or 0)
                    bar = _bar_length(el) or bar
                    if states_meter and self._signatures(el, self.tick(cursor)):
                        self.meter_part = part_idx
                elif tag == "direction":
                    offset = _number(_text(el, "offset"))
                    at = cursor + (Fraction(offset).limit_denominator(960) / divisions if offset else 0)
                    for dyn in el.iterfind("direction-type/dynamics"):
                        for mark in dyn:
                            velocity = _DYNAMICS.get(mark.tag, velocity)
                    sound = el.find("sound")
                    if not self._tempo(sound, at):
                        self._metronome(el, at)
                elif tag == "sound":
                    self._tempo(el, cursor)
            measure_start += _measure_length(longest - measure_start, bar, sounding)

    def _note(self, el: ET.Element, info: _Part, part_idx: int, onset: Fraction, dur: Fraction, transpose: int,
              velocity: int, open_ties: dict[int, int]) -> None:
        inst = el.find("instrument")
        inst_id = inst.get("id", "") if inst is not None else ""
        program = info.instruments.get(inst_id, info.default)
        pitch_el = el.find("pitch")
        if pitch_el is not None:
            step = (_text(pitch_el, "step") or "C").upper()
            alter = _number(_text(pitch_el, "alter")) or 0.0
            octave = int(_number(_text(pitch_el, "octave")) or 4)
            pitch = 12 * (octave + 1) + _STEP.get(step, 0) + round(alter) + transpose
        else:
            un = el.find("unpitched")
            if un is None:
                return
            if inst_id in info.unpitched:
                pitch = info.unpitched[inst_id]
            else:
                step = (_text(un, "display-step") or "C").upper()
                pitch = 12 * (int(_number(_text(un, "display-octave")) or 4) + 1) + _STEP.get(step, 0)
            program = DRUMS
        if not 0 <= pitch <= 127:
            return
        ties = {t.get("type") for t in el.findall("tie")} or {t.get("type") for t in el.iterfind("notations/tied")}
        start, end = self.tick(onset), self.tick(onset + dur)
        idx = open_ties.get(pitch)
        if "stop" in ties and idx is not None and self.notes[idx][1] <= start + 1:
            self.notes[idx][1] = max(self.notes[idx][1], end)
        else:
            idx = len(self.notes)
            self.notes.append([start, max(end, start + 1), pitch, velocity, program,
                               self.track(part_idx, info.name, program)])
        if "start" in ties:
            open_ties[pitch] = idx
        else:
            open_ties.pop(pitch, None)

    def _signatures(self, attrs: ET.Element, tick: int) -> bool:
        found = False
        time_el = attrs.find("time")
        if time_el is not None and time_el.find("beats") is not None:
            try:
                beats = sum(int(x) for x in re.split(r"\+", _text(time_el, "beats") or ""))
                beat_type = int(_text(time_el, "beat-type") or 4)
                if beats > 0 and beat_type > 0:
                    self.time_sigs[tick] = TimeSignature(tick, beats, beat_type)
                    found = True
            except ValueError:
                pass
        key_el = attrs.find("key")
        if key_el is not None and key_el.find("fifths") is not None:
            fifths = int(_number(_text(key_el, "fifths")) or 0)
            self.key_sigs[tick] = KeySignature(tick, max(-7, min(7, fifths)), _text(key_el, "mode") == "minor")
            found = True
        return found

    def _tempo(self, sound: ET.Element | None, at: Fraction) -> bool:
        bpm = _number(sound.get("tempo")) if sound is not None else None
        if bpm and bpm > 0:
            self.tempos.setdefault(self.tick(at), round(60e6 / bpm))
            return True
        return False

    def _metronome(self, direction: ET.Element, at: Fraction) -> None:
        met = direction.find("direction-type/metronome")
        per_minute = _number(_text(met, "per-minute")) if met is not None else None
        if not per_minute or per_minute <= 0:
            return
        unit = _BEAT_UNIT.get(_text(met, "beat-unit") or "quarter", Fraction(1))
        if met.find("beat-unit-dot") is not None:
            unit *= Fraction(3, 2)
        self.tempos.setdefault(self.tick(at), round(60e6 / (per_minute * float(unit))))

    def piece(self, path: str | None) -> Piece:
        a = np.asarray(self.notes, dtype=np.int64)
        return Piece(TICKS_PER_BEAT, a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5], tracks=self.tracks,
                     tempo_map=TempoMap.from_changes(TICKS_PER_BEAT, sorted(self.tempos.items())),
                     time_signatures=_changes(self.time_sigs), key_signatures=_changes(self.key_sigs), path=path)


def _bar_length(attrs: ET.Element) -> Fraction | None:
    """Quarters per bar of an <attributes>' time signature, None without one."""
    time_el = attrs.find("time")
    try:
        beats = sum(int(x) for x in (_text(time_el, "beats") or "").split("+"))
        beat_type = int(_text(time_el, "beat-type") or 0)
    except ValueError:
        return None
    return Fraction(4 * beats, beat_type) if beats > 0 and beat_type > 0 else None


def _measure_length(highest: Fraction, bar: Fraction, sounding: bool) -> Fraction:
    """How far a measure moves the next one on, as music21 decides it (xmlToM21's
    adjustTimeAttributesFromMeasure), so that parts stay aligned on files that overfill a bar:
    its longest voice, except that an empty measure lasts a bar and a measure overfull by a small, odd
    amount (not above half a quarter nor a multiple of 1/16 or 1/12) lasts a bar."""
    if highest == 0 and not sounding:
        return bar
    if highest > bar:
        diff = highest - bar
        if diff > Fraction(1, 2) or (diff * 16).denominator == 1 or (diff * 12).denominator == 1:
            return highest
        return bar
    return highest


def _changes(by_tick: dict) -> list:
    """Signatures in tick order, each kept only where it changes."""
    out = []
    for tick in sorted(by_tick):
        item = by_tick[tick]
        if not out or (vars(out[-1]) | {"tick": 0}) != (vars(item) | {"tick": 0}):
            out.append(item)
    return out
