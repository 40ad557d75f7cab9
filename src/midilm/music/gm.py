"""General MIDI program names, families and plain instrument words, and lookup from free text."""

from __future__ import annotations

import re

DRUMS = 128

PROGRAM_NAMES = (
    "Acoustic Grand Piano", "Bright Acoustic Piano", "Electric Grand Piano", "Honky-tonk Piano",
    "Electric Piano 1", "Electric Piano 2", "Harpsichord", "Clavinet",
    "Celesta", "Glockenspiel", "Music Box", "Vibraphone", "Marimba", "Xylophone", "Tubular Bells",
    "Dulcimer",
    "Drawbar Organ", "Percussive Organ", "Rock Organ", "Church Organ", "Reed Organ", "Accordion",
    "Harmonica", "Tango Accordion",
    "Acoustic Guitar (nylon)", "Acoustic Guitar (steel)", "Electric Guitar (jazz)",
    "Electric Guitar (clean)", "Electric Guitar (muted)", "Overdriven Guitar", "Distortion Guitar",
    "Guitar Harmonics",
    "Acoustic Bass", "Electric Bass (finger)", "Electric Bass (pick)", "Fretless Bass", "Slap Bass 1",
    "Slap Bass 2", "Synth Bass 1", "Synth Bass 2",
    "Violin", "Viola", "Cello", "Contrabass", "Tremolo Strings", "Pizzicato Strings",
    "Orchestral Harp", "Timpani",
    "String Ensemble 1", "String Ensemble 2", "Synth Strings 1", "Synth Strings 2", "Choir Aahs",
    "Voice Oohs", "Synth Voice", "Orchestra Hit",
    "Trumpet", "Trombone", "Tuba", "Muted Trumpet", "French Horn", "Brass Section", "Synth Brass 1",
    "Synth Brass 2",
    "Soprano Sax", "Alto Sax", "Tenor Sax", "Baritone Sax", "Oboe", "English Horn", "Bassoon",
    "Clarinet",
    "Piccolo", "Flute", "Recorder", "Pan Flute", "Blown Bottle", "Shakuhachi", "Whistle", "Ocarina",
    "Lead 1 (square)", "Lead 2 (sawtooth)", "Lead 3 (calliope)", "Lead 4 (chiff)", "Lead 5 (charang)",
    "Lead 6 (voice)", "Lead 7 (fifths)", "Lead 8 (bass + lead)",
    "Pad 1 (new age)", "Pad 2 (warm)", "Pad 3 (polysynth)", "Pad 4 (choir)", "Pad 5 (bowed)",
    "Pad 6 (metallic)", "Pad 7 (halo)", "Pad 8 (sweep)",
    "FX 1 (rain)", "FX 2 (soundtrack)", "FX 3 (crystal)", "FX 4 (atmosphere)", "FX 5 (brightness)",
    "FX 6 (goblins)", "FX 7 (echoes)", "FX 8 (sci-fi)",
    "Sitar", "Banjo", "Shamisen", "Koto", "Kalimba", "Bagpipe", "Fiddle", "Shanai",
    "Tinkle Bell", "Agogo", "Steel Drums", "Woodblock", "Taiko Drum", "Melodic Tom", "Synth Drum",
    "Reverse Cymbal",
    "Guitar Fret Noise", "Breath Noise", "Seashore", "Bird Tweet", "Telephone Ring", "Helicopter",
    "Applause", "Gunshot",
)  # fmt: skip

FAMILIES = (
    "Piano", "Chromatic Percussion", "Organ", "Guitar", "Bass", "Strings", "Ensemble", "Brass", "Reed",
    "Pipe", "Synth Lead", "Synth Pad", "Synth Effects", "Ethnic", "Percussive", "Sound Effects",
)  # fmt: skip

# Plain words a musician uses, one per program (used in captions and to read prompts).
PLAIN_NAMES = (
    ["piano"] * 4 + ["electric piano"] * 2 + ["harpsichord", "clavinet"]
    + ["celesta", "glockenspiel", "music box", "vibraphone", "marimba", "xylophone", "tubular bells",
       "dulcimer"]
    + ["organ"] * 4 + ["reed organ", "accordion", "harmonica", "accordion"]
    + ["acoustic guitar"] * 2 + ["electric guitar"] * 3 + ["overdriven guitar", "distortion guitar",
                                                           "guitar"]
    + ["acoustic bass"] + ["electric bass"] * 2 + ["fretless bass", "slap bass", "slap bass",
                                                   "synth bass", "synth bass"]
    + ["violin", "viola", "cello", "contrabass", "strings", "pizzicato strings", "harp", "timpani"]
    + ["strings", "strings", "synth strings", "synth strings", "choir", "choir", "synth voice",
       "orchestra hit"]
    + ["trumpet", "trombone", "tuba", "muted trumpet", "french horn", "brass", "synth brass",
       "synth brass"]
    + ["soprano saxophone", "alto saxophone", "tenor saxophone", "baritone saxophone", "oboe",
       "english horn", "bassoon", "clarinet"]
    + ["piccolo", "flute", "recorder", "pan flute", "blown bottle", "shakuhachi", "whistle", "ocarina"]
    + ["synth lead"] * 8 + ["synth pad"] * 8 + ["synth effects"] * 8
    + ["sitar", "banjo", "shamisen", "koto", "kalimba", "bagpipe", "fiddle", "shehnai"]
    + ["bells", "agogo", "steel drums", "woodblock", "taiko drum", "toms", "synth drum",
       "reverse cymbal"]
    + ["guitar fret noise", "breath noise", "seashore", "bird tweet", "telephone", "helicopter",
       "applause", "gunshot"]
)
assert len(PROGRAM_NAMES) == 128 and len(PLAIN_NAMES) == 128


def program_name(program: int) -> str:
    """GM name of a program, or "Drums" for 128."""
    return "Drums" if program == DRUMS else PROGRAM_NAMES[program]


def family(program: int) -> str:
    return "Drums" if program == DRUMS else FAMILIES[program // 8]


def plain_name(program: int) -> str:
    return "drums" if program == DRUMS else PLAIN_NAMES[program]


# words a prompt may use -> the program we write for them (the first program with that plain name,
# plus common synonyms)
_SYNONYMS = {
    "drums": DRUMS, "drum kit": DRUMS, "drum": DRUMS, "percussion": DRUMS, "beat": DRUMS,
    "grand piano": 0, "keys": 0, "keyboard": 0, "rhodes": 4, "e-piano": 4,
    "bass": 33, "bass guitar": 33, "upright bass": 32, "double bass": 32,
    "guitar": 24, "nylon guitar": 24, "steel guitar": 25, "jazz guitar": 26, "clean guitar": 27,
    "string ensemble": 48, "string section": 48, "strings": 48, "orchestra": 48,
    "sax": 65, "saxophone": 65, "alto sax": 65, "tenor sax": 66, "soprano sax": 64, "baritone sax": 67,
    "horn": 60, "horns": 61, "brass section": 61, "synth": 81, "synthesizer": 81, "lead synth": 81,
    "pad": 89, "synth pad": 89, "voice": 52, "vocals": 52, "choir": 52, "flutes": 73,
    "violins": 40, "cellos": 42, "trumpets": 56, "organ": 16, "church organ": 19, "harp": 46,
}  # fmt: skip


def _build_lookup() -> dict[str, int]:
    table: dict[str, int] = {}
    for p, name in enumerate(PROGRAM_NAMES):
        table.setdefault(name.lower(), p)
    for p, name in enumerate(PLAIN_NAMES):
        table.setdefault(name, p)
    table.update(_SYNONYMS)
    return table


_LOOKUP = _build_lookup()
_PATTERN = re.compile(
    r"\b(" + "|".join(re.escape(k) for k in sorted(_LOOKUP, key=len, reverse=True)) + r")\b", re.IGNORECASE
)


def program_from_word(word: str) -> int:
    """Program for an instrument word ("violin", "drums", "Electric Bass (finger)", "33").

    Raises ValueError naming the word when it is not an instrument.
    """
    w = word.strip().lower()
    if w.isdigit() and 0 <= int(w) <= 128:
        return int(w)
    if w in _LOOKUP:
        return _LOOKUP[w]
    if w.endswith("s") and w[:-1] in _LOOKUP:
        return _LOOKUP[w[:-1]]
    raise ValueError(f"unknown instrument {word!r}")


def programs_in_text(text: str) -> list[int]:
    """Programs named in free text, in order of first mention, longest phrase first."""
    out: list[int] = []
    for m in _PATTERN.finditer(text):
        p = _LOOKUP[m.group(1).lower()]
        if p not in out:
            out.append(p)
    return out
