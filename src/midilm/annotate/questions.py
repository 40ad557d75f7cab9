"""Question-answer pairs about one analysis dict, and the parsing that scores model answers against it.

``make_questions`` writes, for every field the dict holds, a short factual answer and a longer
descriptive one, each under a randomly chosen paraphrase of the question. ``parse_answer`` and
``answer_is_correct`` turn free-text answers (ours or a model's) back into normalised values so factual
accuracy can be measured per question type. ``question_type`` tells which type a question (the dataset's
or a user's) asks about.
"""

from __future__ import annotations

import bisect
import random
import re
import unicodedata
from collections.abc import Collection
from typing import Any

from midilm.annotate.captions import (
    DYNAMICS_WORDS,
    TEXTURE_PHRASES,
    article,
    cap,
    chord_pattern_symbols,
    chord_symbol,
    common_chords,
    era_phrase,
    format_duration,
    get,
    instrument_words,
    join_list,
    life_span,
    make_caption,
    mood_guess,
    mood_words,
    present,
    spelled_key,
    tempo_simple,
    tune_type_noun,
)
from midilm.music import gm

TONICS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
ITALIAN_TEMPI = ("Grave", "Largo", "Adagio", "Andante", "Moderato", "Allegro", "Vivace", "Presto", "Prestissimo")
_ITALIAN_CUTS = (40, 60, 70, 90, 110, 140, 160, 210)
SIMPLE_TEMPI = ("Slow", "Moderate", "Fast", "Very fast")
_SIMPLE_CUTS = (80, 120, 160)
TEXTURES = ("monophonic", "homophonic", "polyphonic")
DYNAMICS = ("pp", "p", "mp", "mf", "f", "ff")
# No Italian name for p and mp: "piano" would read as the instrument to anything scanning for instruments.
_DYNAMICS_NAMES = {"pp": "pianissimo", "mf": "mezzo-forte", "f": "forte", "ff": "fortissimo"}

QUESTIONS: dict[str, tuple[str, ...]] = {
    "key": (
        "What key is this piece in?",
        "Which key is the music written in?",
        "What is the key of this piece?",
        "In what key is this composition?",
        "Can you tell me the key of this music?",
        "What's the tonal centre of this piece?",
    ),
    "mode": (
        "Is this piece in a major or a minor key?",
        "Is the music major or minor?",
        "What is the mode of this piece, major or minor?",
        "Does this piece use a major or minor tonality?",
    ),
    "tempo": (
        "What is the tempo of this piece in bpm?",
        "How many beats per minute does this music have?",
        "At what tempo is this played?",
        "What's the bpm of this track?",
        "How fast is the tempo, in beats per minute?",
    ),
    "tempo_word": (
        "Which Italian tempo marking fits this piece?",
        "How would you describe the tempo in words?",
        "Is this piece slow or fast?",
        "What tempo marking would you give this music?",
    ),
    "meter": (
        "What is the time signature?",
        "What meter is this piece in?",
        "How many beats are there in a bar, and what is the time signature?",
        "Which time signature does the music use?",
        "What's the meter of this composition?",
    ),
    "instruments": (
        "Which instruments are playing?",
        "What instruments can be heard in this piece?",
        "Which instruments does this music use?",
        "Name the instruments in this track.",
        "What is the instrumentation?",
    ),
    "drums": (
        "Are there drums in this piece?",
        "Does this music include drums?",
        "Is there a drum part?",
        "Can you hear any drums?",
    ),
    "chord_progression": (
        "What is the main chord progression?",
        "Which chord progression repeats most often?",
        "What chord sequence does this piece keep returning to?",
        "Describe the recurring chord progression.",
    ),
    "chords": (
        "Which chords are used most?",
        "What are the main chords in this piece?",
        "Which chords dominate the harmony?",
        "What chords does the music rely on?",
    ),
    "texture": (
        "What is the texture of this music?",
        "Is the texture monophonic, homophonic or polyphonic?",
        "How would you describe the texture?",
        "Is this a single line, a melody with chords, or several independent voices?",
    ),
    "dynamics": (
        "How loud is this piece overall?",
        "What are the dynamics like?",
        "What is the overall dynamic level?",
        "Is the music played softly or loudly?",
    ),
    "composer": (
        "Who composed this piece?",
        "Who is the composer?",
        "Who wrote this music?",
        "Which composer wrote this work?",
    ),
    "era": (
        "Which era does this music come from?",
        "From what period is this piece?",
        "What historical era does this composition belong to?",
    ),
    "nationality": (
        "What nationality was the composer?",
        "Where was the composer of this piece from?",
        "What is the composer's nationality?",
    ),
    "tune_type": (
        "What kind of tune is this?",
        "What type of dance tune is this?",
        "Which type of tune is this piece?",
    ),
    "region": ("Where does this music come from?", "What region is this tune from?"),
    "genre": ("What genre is this music?", "Which style does this piece belong to?", "What is the genre?"),
    "title": ("What is the title of this piece?", "What is this piece called?", "Do you know the name of this tune?"),
    "duration": (
        "How long is this piece?",
        "What is the duration of the music?",
        "How long does this track last?",
        "How many seconds does this piece run?",
    ),
    "pitch_range": (
        "What is the pitch range of this piece?",
        "What are the lowest and highest notes?",
        "Which register does the music cover?",
        "How wide is the range of pitches?",
    ),
    "articulation": (
        "Is the playing legato or staccato?",
        "How would you describe the articulation?",
        "Are the notes connected or detached?",
    ),
    "modulation": (
        "Does the key change during the piece?",
        "Does this music modulate?",
        "Are there any key changes?",
    ),
    "mood": (
        "What mood does this piece convey?",
        "How does this music feel?",
        "What is the emotional character of this piece?",
        "What kind of atmosphere does this music create?",
    ),
    "caption": (
        "Describe this piece of music.",
        "Give a description of this music.",
        "What does this MIDI piece sound like?",
        "Write a caption for this music.",
        "Summarise the musical content of this piece.",
    ),
}

# a question that begins with one of these asks for a long answer
LONG_FORM_PREFIXES = ("In a few sentences: ", "Please explain. ", "Describe in detail: ")
_LONG_PREFIXES = ("", "") + LONG_FORM_PREFIXES  # a long item's question: one of these three times in five

_KEYWORDS = (  # fallback question classifier for wordings outside the paraphrases (the first match wins)
    ("mode", r"\bmajor or (a )?minor\b|\bmode\b|\btonality\b"),
    ("key", r"\bkey\b|\btonal cent"),
    ("tempo_word", r"\btempo marking\b|\bslow or fast\b|\btempo in words\b"),
    ("tempo", r"\btempo\b|\bbpm\b|\bbeats per minute\b|\bhow fast\b"),
    ("meter", r"\btime signature\b|\bmeter\b|\bbeats .* bar\b"),
    ("drums", r"\bdrums?\b|\bpercussion\b"),
    ("instruments", r"\binstrument"),
    ("chord_progression", r"\bchord (progression|sequence)\b"),
    ("chords", r"\bchords?\b|\bharmony\b"),
    ("texture", r"\btexture\b|\bmonophonic\b|\bpolyphonic\b"),
    ("dynamics", r"\bdynamic|\bloud|\bsoft"),
    ("duration", r"\bhow long\b|\bduration\b|\bseconds\b"),
    ("pitch_range", r"\brange\b|\bregister\b|\blowest\b|\bhighest\b"),
    ("articulation", r"\blegato\b|\bstaccato\b|\barticulation\b"),
    ("modulation", r"\bmodulat|\bkey change"),
    ("composer", r"\bcompos|\bwho wrote\b"),
    ("era", r"\bera\b|\bperiod\b"),
    ("genre", r"\bgenre\b|\bstyle\b"),
    ("title", r"\btitle\b|\bcalled\b|\bname of\b"),
    ("mood", r"\bmood\b|\bfeel\b|\bemotion|\batmosphere\b"),
    ("caption", r"\bdescri|\bcaption\b|\bsummar|\bsound like\b"),
)


def question_type(question: str, types: Collection[str] | None = None) -> str | None:
    """The question type (a key of `QUESTIONS`) a question asks about: its paraphrases first (after any of
    `LONG_FORM_PREFIXES`), then keywords; None where neither says. `types` limits the answer to those types."""
    text = question.strip()
    for prefix in LONG_FORM_PREFIXES:
        text = text.removeprefix(prefix)
    for qtype, phrasings in QUESTIONS.items():
        if (types is None or qtype in types) and text in phrasings:
            return qtype
    low = text.lower()
    for qtype, pattern in _KEYWORDS:
        if (types is None or qtype in types) and re.search(pattern, low):
            return qtype
    return None


# ---------------------------------------------------------------- normalising values


def italian_bin(bpm: float) -> str:
    """Italian tempo word for bpm with the MidiCaps cuts 40/60/70/90/110/140/160/210 (as rhythm.tempo_word)."""
    return ITALIAN_TEMPI[bisect.bisect_right(_ITALIAN_CUTS, float(bpm))]


def simple_bin(bpm: float) -> str:
    """Slow / Moderate / Fast / Very fast with the cuts 80/120/160."""
    return SIMPLE_TEMPI[bisect.bisect_right(_SIMPLE_CUTS, float(bpm))]


_LETTER_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_ACC = r"(#|♯|♭|b(?![a-ln-z])|\s*-?\s*sharp\b|\s*-?\s*flat\b)"
# Upper-case tonic letters always; lower-case ones only with an accidental, so "a minor key" is no A minor.
_KEY_RE = re.compile(
    r"(?<![A-Za-z])(?:([A-G])" + _ACC + r"?|([a-g])" + _ACC + r")\s*-?\s*([Mm]ajor\b|[Mm]inor\b|maj\b|min\b|m(?![a-z]))"
)
_CHORD_RE = re.compile(
    r"(?<![A-Za-z#])([A-G](?:#|b)?(?:maj7|maj9|maj|m7b5|m\(maj7\)|m7|m9|m6|m|dim7|dim|aug|sus4|sus2|7|9|6)?)"
    r"(?![A-Za-z#0-9])"
)
_NOTE_RE = re.compile(r"(?<![A-Za-z])([A-G])(#|b)?(-?\d)(?!\d)")


def _accidental_shift(acc: str | None) -> int:
    if not acc:
        return 0
    a = acc.strip().lstrip("-").strip().lower()
    return 1 if a in ("#", "♯", "sharp") else -1 if a in ("b", "♭", "flat") else 0


def normalise_key(text: str) -> str | None:
    """First key named in text in project spelling ("Eb major"), enharmonics merged; None if none.

    Spelled-out modes ("E-flat major") count anywhere; abbreviations ("Ebm", "C maj") only when they are
    the whole answer or follow the word "key", because elsewhere they are chord symbols ("Eb, Bb7, Cm").
    """
    matches = list(_KEY_RE.finditer(text))
    full = [m for m in matches if m.group(5).lower() in ("major", "minor")]
    short = [
        m
        for m in matches
        if re.search(r"\bkeys?\b[^.,;]{0,12}$", text[: m.start()], re.IGNORECASE)
        or re.fullmatch(r"[\s\W]*", text[: m.start()] + text[m.end() :])
    ]
    m = full[0] if full else short[0] if short else None
    if m is None:
        return None
    letter = (m.group(1) or m.group(3)).upper()
    acc = m.group(2) if m.group(1) else m.group(4)
    mode_word = m.group(5).lower()
    mode = "major" if mode_word in ("major", "maj") else "minor"
    pc = (_LETTER_PC[letter] + _accidental_shift(acc)) % 12
    return f"{TONICS[pc]} {mode}"


def note_number(name: str) -> int | None:
    """MIDI number of a note name like "C4" or "Eb2" (C4 = 60)."""
    m = _NOTE_RE.fullmatch(name.strip())
    if not m:
        return None
    return (int(m.group(3)) + 1) * 12 + _LETTER_PC[m.group(1)] + _accidental_shift(m.group(2))


def _plain_instrument(word: str) -> str:
    # Truth and prediction pass through the same GM lookup, so "guitar" and "acoustic guitar" compare equal
    # exactly when the lookup maps them to the same program.
    try:
        return gm.plain_name(gm.program_from_word(word))
    except ValueError:
        return word.strip().lower()


def _fold(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).lower()


def _words_in(text: str, options: tuple[str, ...] | list[str]) -> str | None:
    """The option occurring earliest in text (whole words, case-insensitive), longest first on ties."""
    best: tuple[int, int, str] | None = None
    for o in options:
        m = re.search(rf"(?<![A-Za-z]){re.escape(o)}(?![A-Za-z])", text, re.IGNORECASE)
        if m and (best is None or (m.start(), -len(o)) < (best[0], best[1])):
            best = (m.start(), -len(o), o)
    return best[2] if best else None


_TEXTURE_SYNONYMS = {
    "monophony": "monophonic", "single melodic line": "monophonic", "single line": "monophonic",
    "unaccompanied": "monophonic", "homophony": "homophonic", "melody and accompaniment": "homophonic",
    "melody with chords": "homophonic", "melody supported by chords": "homophonic", "chordal": "homophonic",
    "polyphony": "polyphonic", "contrapuntal": "polyphonic", "counterpoint": "polyphonic",
    "independent voices": "polyphonic", "independent lines": "polyphonic",
}  # fmt: skip

_DYNAMICS_TEXT = {
    "pianissimo": "pp", "very soft": "pp", "very quiet": "pp", "hushed": "pp",
    "mezzo-piano": "mp", "mezzo piano": "mp", "moderately soft": "mp", "fairly quiet": "mp",
    "mezzo-forte": "mf", "mezzo forte": "mf", "moderately loud": "mf", "medium loud": "mf",
    "fortissimo": "ff", "very loud": "ff", "forte": "f", "loud": "f", "strong": "f",
    "soft": "p", "quiet": "p", "gentle": "p", "piano": "p",
}  # fmt: skip

_TUNE_WORDS = (
    "slip jig",
    "jig",
    "reel",
    "hornpipe",
    "waltz",
    "christmas carol",
    "carol",
    "morris",
    "playford",
    "polka",
    "march",
    "dance tune",
)


def parse_answer(qtype: str, text: str) -> Any:
    """Normalised value named in a free-text answer, or None when it names none.

    key -> "Eb major"; mode -> "major"|"minor"; tempo/tempo_word -> bpm float, else an Italian or simple
    tempo word; meter -> "6/8"; instruments -> list of plain instrument words; drums/modulation -> bool;
    texture -> texture word; dynamics -> "pp".."ff"; duration -> seconds; pitch_range -> (low, high) MIDI
    numbers; chords/chord_progression -> list of chord symbols; other types -> the trimmed text.
    """
    text = str(text or "").strip()
    if not text:
        return None
    if qtype == "key":
        return normalise_key(text)
    if qtype == "mode":
        key = normalise_key(text)
        if key:
            return key.split()[1]
        m = re.search(r"\b(major|minor)\b", text, re.IGNORECASE)
        return m.group(1).lower() if m else None
    if qtype in ("tempo", "tempo_word"):
        m = re.search(r"(\d+(?:\.\d+)?)\s*(?:bpm|beats\s+(?:per|a)\s+minute)", text, re.IGNORECASE)
        if m is None:
            m = re.search(r"(?<![\d/.])(\d{2,3}(?:\.\d+)?)(?![\d/])", text)
            if m and not 20 <= float(m.group(1)) <= 400:
                m = None
        if m:
            return float(m.group(1))
        word = _words_in(text, ITALIAN_TEMPI)
        if word:
            return word
        word = _words_in(text, ("very fast", "slow", "moderate", "fast"))
        return cap(word.lower()) if word else None
    if qtype == "meter":
        m = re.search(r"(?<!\d)(\d{1,2})\s*/\s*(\d{1,2})(?!\d)", text)
        if m:
            return f"{int(m.group(1))}/{int(m.group(2))}"
        if re.search(r"\bcommon time\b", text, re.IGNORECASE):
            return "4/4"
        if re.search(r"\b(cut time|alla breve)\b", text, re.IGNORECASE):
            return "2/2"
        return None
    if qtype == "instruments":
        words: list[str] = []
        for p in gm.programs_in_text(text):
            w = gm.plain_name(p)
            if w not in words:
                words.append(w)
        return words or None
    if qtype in ("drums", "modulation"):
        low = text.lower()
        negative = r"\b(no drums|without drums|does not|doesn't|stays)\b"
        if re.match(r"\s*(no|nope|not)\b", low) or re.search(negative, low):
            return False
        if re.match(r"\s*yes\b", low) or (qtype == "drums" and "drum" in low):
            return True
        return None
    if qtype == "texture":
        word = _words_in(text, TEXTURES)
        if word:
            return word.lower()
        syn = _words_in(text, list(_TEXTURE_SYNONYMS))
        return _TEXTURE_SYNONYMS[syn.lower()] if syn else None
    if qtype == "dynamics":
        m = re.search(r"(?<![A-Za-z])(pp|mp|mf|ff|p|f)(?![A-Za-z])", text)
        if m:
            return m.group(1)
        word = _words_in(text, list(_DYNAMICS_TEXT))
        return _DYNAMICS_TEXT[word.lower()] if word else None
    if qtype == "duration":
        m = re.search(r"(\d+)\s*(?:minutes?|min)\b(?:\s*(?:and\s*)?(\d+)\s*(?:seconds?|s)\b)?", text)
        if m:
            return float(int(m.group(1)) * 60 + int(m.group(2) or 0))
        m = re.search(r"\b(\d+):(\d{2})\b", text)
        if m:
            return float(int(m.group(1)) * 60 + int(m.group(2)))
        m = re.search(r"(\d+(?:\.\d+)?)\s*(?:seconds?|secs?|s)\b", text)
        return float(m.group(1)) if m else None
    if qtype == "pitch_range":
        notes = [n for n in (note_number(m.group(0)) for m in _NOTE_RE.finditer(text)) if n is not None]
        return (min(notes[:2]), max(notes[:2])) if len(notes) >= 2 else None
    if qtype in ("chords", "chord_progression"):
        return _CHORD_RE.findall(text) or None
    if qtype == "articulation":
        legato = re.search(r"\blegato\b|\bconnected\b|\bsmooth", text, re.IGNORECASE)
        staccato = re.search(r"\bstaccato\b|\bdetached\b|\bshort notes\b", text, re.IGNORECASE)
        if re.search(r"\bmixed\b|\bmix of\b|\bboth\b", text, re.IGNORECASE) or (legato and staccato):
            return "mixed"
        return "legato" if legato else "staccato" if staccato else None
    if qtype == "tune_type":
        word = _words_in(text, _TUNE_WORDS)
        return word.lower() if word else None
    if qtype in QUESTIONS:
        return text
    raise ValueError(f"unknown question type {qtype!r}")


def answer_is_correct(qtype: str, predicted_text: str, analysis: dict[str, Any]) -> bool:
    """Whether a free-text answer states the analysis's value for this question type.

    key: same tonic (enharmonics merged) and mode; tempo: same Italian bin (a simple word such as "fast"
    is checked against the simple bins); meter: equal; instruments: at least half of the true instrument
    words named; texture, dynamics, mode: equal; duration: within 15 % (5 s minimum); composer: surname
    named. A type whose field the analysis lacks is never correct.
    """
    value = parse_answer(qtype, predicted_text)
    if value is None:
        return False
    a = analysis
    if qtype == "key":
        truth = normalise_key(str(get(a, "key") or ""))
        return truth is not None and value == truth
    if qtype == "mode":
        mode = get(a, "mode") or (normalise_key(str(get(a, "key") or "")) or " ").split(" ")[1]
        return value == mode
    if qtype in ("tempo", "tempo_word"):
        bpm = get(a, "bpm")
        if isinstance(value, float):
            if bpm is not None:
                return italian_bin(value) == italian_bin(float(bpm))
            return get(a, "tempo_word") is not None and italian_bin(value) == str(get(a, "tempo_word")).title()
        if value in ITALIAN_TEMPI:
            truth = italian_bin(float(bpm)) if bpm is not None else str(get(a, "tempo_word") or "").title()
            return value == truth
        truth = simple_bin(float(bpm)) if bpm is not None else tempo_simple(a)
        return truth is not None and value.lower() == truth.lower()
    if qtype == "meter":
        return value == str(get(a, "time_signature") or "").strip()
    if qtype == "instruments":
        truth = [_plain_instrument(w) for w in instrument_words(a)]
        if not truth:
            return False
        return sum(1 for t in dict.fromkeys(truth) if t in value) / len(dict.fromkeys(truth)) >= 0.5
    if qtype == "drums":
        truth = a.get("has_drums")
        if truth is None:
            truth = "drums" in instrument_words(a) if instrument_words(a) else None
        return truth is not None and value == bool(truth)
    if qtype == "modulation":
        return value == _modulates(a) if present(a, "key_segments") else False
    if qtype in ("texture", "dynamics", "articulation"):
        truth = get(a, qtype)
        return truth is not None and str(value).lower() == str(truth).lower()
    if qtype == "duration":
        secs = get(a, "duration")
        return secs is not None and abs(value - float(secs)) <= max(5.0, 0.15 * float(secs))
    if qtype == "pitch_range":
        lo, hi = note_number(str(get(a, "pitch_low") or "")), note_number(str(get(a, "pitch_high") or ""))
        return lo is not None and hi is not None and abs(value[0] - lo) <= 2 and abs(value[1] - hi) <= 2
    if qtype in ("chords", "chord_progression"):
        truth = chord_pattern_symbols(a) if qtype == "chord_progression" else common_chords(a)
        truth = truth or common_chords(a) or chord_pattern_symbols(a)
        if not truth:
            return False
        uniq = list(dict.fromkeys(truth))
        return sum(1 for c in uniq if c in value) / len(uniq) >= 0.5
    if qtype == "composer":
        who = get(a, "composer")
        if who is None:
            return False
        # The surname is what identifies a composer; first names vary with language and transliteration.
        surname = _fold(re.split(r"[\s,]+", str(who).strip())[-1] if "," not in str(who) else str(who).split(",")[0])
        return surname in _fold(value)
    if qtype == "tune_type":
        truth = get(a, "tune_type")
        return truth is not None and value in _fold(tune_type_noun(truth))
    if qtype == "mood":
        truth = mood_words(a) or mood_guess(a)[0]
        return any(_fold(t) in _fold(value) for t in truth)
    if qtype in ("era", "nationality", "genre", "title", "region"):
        truth = get(a, qtype)
        return truth is not None and _fold(str(truth)) in _fold(value)
    raise ValueError(f"no correctness rule for question type {qtype!r}")


def _modulates(a: dict[str, Any]) -> bool:
    return len({str(s.get("key")) for s in get(a, "key_segments") or [] if s.get("key")}) > 1


# ---------------------------------------------------------------- answers


def _answers(qtype: str, a: dict[str, Any], rng: random.Random) -> tuple[str, str] | None:
    """(short answer, long answer) for one type, or None when the dict lacks the field."""
    if qtype == "key" and present(a, "key"):
        key = str(get(a, "key"))
        short = rng.choice((f"{key}.", f"It is in {key}.", f"The key is {key}.", key))
        extra = ""
        if _modulates(a):
            others = [str(s["key"]) for s in a["key_segments"] if s.get("key") and s["key"] != key]
            extra = f" It also passes through {join_list(list(dict.fromkeys(others))[:3])}."
        chords = chord_pattern_symbols(a) or common_chords(a)
        if chords:
            extra += f" Chords such as {join_list(list(dict.fromkeys(chords))[:3])} appear often."
        spelled = spelled_key(key)
        name = f"{spelled} ({key})" if spelled != key else key
        long = rng.choice(
            (
                f"The piece is written in {name}.{extra}",
                f"Its home key is {name}, which sets its tonal centre.{extra}",
                f"This music is in {name}.{extra}",
            )
        )
        conf = get(a, "key_confidence")
        if conf is not None and float(conf) < 0.4:
            long += " The key is not strongly established, so this is the most likely reading."
        return short, long
    if qtype == "mode":
        mode = get(a, "mode") or (str(get(a, "key")).split()[-1] if present(a, "key") else None)
        if mode not in ("major", "minor"):
            return None
        key = get(a, "key")
        short = rng.choice((f"{cap(mode)}.", f"It is in a {mode} key.", f"{cap(mode)}."))
        long = f"The piece is in a {mode} key" + (f", {key}." if key else ".")
        if mode == "minor":
            long += rng.choice((" The minor mode gives it a darker colour.", ""))
        else:
            long += rng.choice((" The major mode gives it a brighter colour.", ""))
        return short, long
    if qtype in ("tempo", "tempo_word"):
        bpm = get(a, "bpm")
        word = get(a, "tempo_word") or (italian_bin(float(bpm)) if bpm is not None else None)
        simple = tempo_simple(a)
        if bpm is None and word is None:
            return None
        b = int(round(float(bpm))) if bpm is not None else None
        est = get(a, "bpm_source") == "estimated"
        approx = "about " if est else ""
        if qtype == "tempo":
            if b is None:
                return None
            short = rng.choice((f"{approx}{b} bpm.", f"About {b} bpm.", f"{b} beats per minute.", f"{b} BPM."))
            short = cap(short)
        else:
            short = rng.choice((f"{word}.", f"{word} ({simple.lower()})." if simple else f"{word}."))
        parts = []
        if b is not None:
            parts.append(f"The tempo is {approx or 'about '}{b} beats per minute")
        else:
            parts.append("The tempo")
        long = parts[0] + (f", which corresponds to {word}" if word else "")
        long += f", a {simple.lower()} pace." if simple else "."
        if est:
            long += " The file gives no reliable tempo, so the value is estimated from the note timing."
        return short, long
    if qtype == "meter" and present(a, "time_signature"):
        ts = str(get(a, "time_signature"))
        short = rng.choice((f"{ts}.", f"{ts} time.", f"It is in {ts}.", ts))
        num, _, den = ts.partition("/")
        unit = {"2": "half-note", "4": "quarter-note", "8": "eighth-note", "16": "sixteenth-note"}.get(den)
        long = f"The piece is in {ts} time"
        if num.isdigit() and unit:
            n = int(num)
            if den == "8" and n in (6, 9, 12):
                long += f": {n // 3} dotted-quarter beats per bar, each divided into three eighth notes."
            else:
                long += f", with {n} {unit} beat{'s' if n != 1 else ''} per bar."
        else:
            long += "."
        return short, long
    if qtype == "instruments":
        words = instrument_words(a)
        if not words:
            return None
        short = cap(join_list(words)) + "."
        if rng.random() < 0.4:
            short = cap(join_list([article(w) for w in words])) + "."
        listed = join_list([article(w) for w in words])
        if len(words) == 1:
            long = f"The piece is played by {article(words[0])} alone; there are no other instruments."
        else:
            long = rng.choice(
                (
                    f"The piece is played by {listed}. The {words[0]} plays the most notes.",
                    f"You can hear {listed}, with the {words[0]} playing the largest share of the notes.",
                )
            )
        gm_names = get(a, "instruments")
        if gm_names and rng.random() < 0.5:
            long += f" In General MIDI terms: {join_list([str(n) for n in gm_names])}."
        return short, long
    if qtype == "drums":
        has = a.get("has_drums")
        if has is None:
            return None
        if has:
            long = "Yes, a drum part is present alongside the other instruments."
            return rng.choice(("Yes.", "Yes, there are drums.")), long
        long = "No, the piece has no drum part; all parts are pitched instruments."
        return rng.choice(("No.", "No, there are no drums.")), long
    if qtype == "chord_progression":
        pattern = chord_pattern_symbols(a)
        if not pattern:
            return None
        seq = ", ".join(pattern)
        count = get(a, "chord_pattern_count")
        short = rng.choice((f"{seq}.", " - ".join(pattern) + "."))
        long = f"The most repeated chord progression is {join_list(pattern)}"
        long += f", which occurs {int(count)} times." if count is not None and int(count) > 1 else "."
        return short, long
    if qtype == "chords":
        chords = common_chords(a)
        if not chords:
            return None
        short = join_list(chords) + "."
        long = f"The harmony relies mostly on {join_list(chords)}, which together take up most of the time."
        if present(a, "key"):
            long += f" This fits the key of {get(a, 'key')}."
        return short, long
    if qtype == "texture" and present(a, "texture"):
        t = str(get(a, "texture"))
        short = rng.choice((f"{cap(t)}.", f"It is {t}.", cap(t)))
        phrase = TEXTURE_PHRASES.get(t, (f"a {t} texture",))[0]
        long = f"The texture is {t}: the music is made of {phrase}."
        return short, long
    if qtype == "dynamics" and present(a, "dynamics"):
        d = str(get(a, "dynamics"))
        word = DYNAMICS_WORDS.get(d, (d,))[0]
        short = f"{cap(word)} ({d})."
        name = _DYNAMICS_NAMES.get(d)
        long = f"Overall the music is {word}" + (f", around {name} ({d})" if name else f" ({d})")
        std = get(a, "velocity_std")
        if std is not None:
            long += ", with " + ("wide" if float(std) >= 15 else "modest") + " variation in loudness."
        else:
            long += "."
        return short, long
    if qtype == "composer" and present(a, "composer"):
        who = str(get(a, "composer"))
        short = rng.choice((f"{who}.", f"It was composed by {who}.", who))
        nat, era = get(a, "nationality"), get(a, "era")
        long = f"This piece was composed by {who}"
        if life_span(a):
            long += f" ({life_span(a)})"
        if nat:
            long += f", {article(f'{nat} composer')}"
        if era:
            long += f" of {era_phrase(era)}"
        return short, long + "."
    if qtype == "era" and present(a, "era"):
        era = str(get(a, "era"))
        long = f"The music belongs to {era_phrase(era)}"
        long += f"; it was written by {get(a, 'composer')}." if present(a, "composer") else "."
        return f"{cap(era)}.", long
    if qtype == "nationality" and present(a, "nationality") and present(a, "composer"):
        nat = str(get(a, "nationality"))
        return f"{nat}.", f"The composer, {get(a, 'composer')}, was {nat}."
    if qtype == "tune_type" and present(a, "tune_type"):
        noun = tune_type_noun(str(get(a, "tune_type")))
        short = cap(article(noun)) + "."
        long = f"This is {article(noun)}"
        if present(a, "time_signature"):
            long += f", here in {get(a, 'time_signature')} time"
        return short, long + "."
    if qtype == "region" and present(a, "region"):
        r = str(get(a, "region"))
        return f"{r}.", f"The music comes from {r}."
    if qtype == "genre" and present(a, "genre"):
        g = str(get(a, "genre"))
        return f"{cap(g)}.", f"The piece belongs to the {g} genre."
    if qtype == "title" and present(a, "title"):
        t = str(get(a, "title"))
        by = f" by {get(a, 'composer')}" if present(a, "composer") else ""
        return f'"{t}".', f'The piece is "{t}"{by}.'
    if qtype == "duration" and present(a, "duration"):
        secs = float(get(a, "duration"))
        d = format_duration(secs)
        word = get(a, "duration_word")
        short = rng.choice((f"About {d}.", f"{int(round(secs))} seconds.", f"Roughly {d}."))
        long = f"The piece lasts about {d}" + (f", which makes it {article(str(word).lower())}." if word else ".")
        return short, long
    if qtype == "pitch_range" and present(a, "pitch_low") and present(a, "pitch_high"):
        low, high = get(a, "pitch_low"), get(a, "pitch_high")
        short = rng.choice((f"{low} to {high}.", f"From {low} to {high}."))
        long = f"The notes range from {low} up to {high}"
        semis = get(a, "pitch_range_semitones")
        if semis is not None:
            long += f", a span of {int(semis)} semitones"
        reg = get(a, "register")
        long += f"; overall the register is {reg}." if reg else "."
        return short, long
    if qtype == "articulation" and present(a, "articulation"):
        art = str(get(a, "articulation"))
        short = f"{cap(art)}."
        long = {
            "legato": "The playing is mostly legato: notes are held until the next one begins.",
            "staccato": "The playing is mostly staccato: notes are short and detached.",
        }.get(art, f"The articulation is {art}, with both connected and detached notes.")
        return short, long
    if qtype == "modulation" and present(a, "key_segments"):
        keys = list(dict.fromkeys(str(s["key"]) for s in a["key_segments"] if s.get("key")))
        if len(keys) > 1:
            return "Yes.", f"Yes, the key changes: it moves between {join_list(keys[:4])}."
        return "No.", f"No, it stays in {keys[0]} throughout." if keys else "No, the key does not change."
    if qtype == "mood":
        moods = mood_words(a)
        if moods:
            return f"{cap(join_list(moods[:3]))}.", f"The mood of the piece is {join_list(moods[:3])}."
        words, reasons = mood_guess(a)
        if not words:
            return None
        short = rng.choice(
            (
                f"Probably {words[0]} (a guess).",
                f"My guess: {words[0]}.",
                f"Possibly {words[0]}, though this is a guess.",
            )
        )
        long = (
            f"The notes alone cannot settle the mood, but {join_list(reasons)} suggest a "
            f"{join_list(words[:2])} character. This is a guess, not a measured fact."
        )
        return short, long
    if qtype == "caption":
        return make_caption(a, rng, "short"), make_caption(a, rng, "long")
    return None


def make_questions(
    analysis: dict[str, Any],
    rng: random.Random,
    *,
    types: tuple[str, ...] | None = None,
    styles: tuple[str, ...] = ("short", "long"),
) -> list[dict[str, str]]:
    """Question-answer items {"question", "answer", "type", "style"} for every type the analysis supports.

    Each supported type gets one item per style, each under a paraphrase drawn from ``rng``.
    """
    out: list[dict[str, str]] = []
    for qtype in types or tuple(QUESTIONS):
        pair = _answers(qtype, analysis, rng)
        if pair is None:
            continue
        for style in styles:
            question = rng.choice(QUESTIONS[qtype])
            if style == "long" and qtype != "caption":
                question = rng.choice(_LONG_PREFIXES) + question
            answer = pair[0] if style == "short" else pair[1]
            out.append({"question": question, "answer": answer, "type": qtype, "style": style})
    return out


__all__ = [
    "LONG_FORM_PREFIXES",
    "QUESTIONS",
    "answer_is_correct",
    "italian_bin",
    "make_questions",
    "normalise_key",
    "parse_answer",
    "question_type",
    "simple_bin",
    "chord_symbol",
]
