"""Write varied MidiCaps-style English captions from one analysis dict, stating only facts the dict holds.

Every caption is assembled from sentence-level building blocks chosen and ordered by a caller-supplied
``random.Random``, so the same seed always gives the same text while different seeds give different
wordings. A field that is missing (absent, ``None``, empty, NaN or ``"unknown"``) is never mentioned;
genre and mood are only named when the dict carries them, and the one derived impression (a mood guess
from mode, tempo and dynamics) is always hedged.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from typing import Any

DETAILS = ("short", "medium", "long")

# Tonic spellings of the project (C, C#, D, Eb, ...) spelled out for prose variety.
_SPELLED_ACCIDENTAL = {"#": "-sharp", "b": "-flat"}

DYNAMICS_WORDS: dict[str, tuple[str, ...]] = {
    # "piano"/"mezzo-piano" are left out on purpose: they would read as the instrument to any tool that
    # scans captions for instrument names.
    "pp": ("very soft", "very quiet", "hushed", "pianissimo"),
    "p": ("soft", "quiet", "gentle"),
    "mp": ("moderately soft", "fairly quiet", "restrained"),
    "mf": ("moderately loud", "medium loud", "mezzo-forte"),
    "f": ("loud", "strong", "forte"),
    "ff": ("very loud", "powerful", "fortissimo"),
}

TEXTURE_PHRASES: dict[str, tuple[str, ...]] = {
    "monophonic": ("a single melodic line", "one unaccompanied line", "a monophonic texture"),
    "homophonic": (
        "a melody supported by chords",
        "a homophonic texture of melody and accompaniment",
        "a tune over chordal accompaniment",
    ),
    "polyphonic": (
        "several independent voices",
        "a polyphonic texture of interweaving lines",
        "independent lines moving against each other",
    ),
}

_ARTICULATION_PHRASES: dict[str, tuple[str, ...]] = {
    "staccato": ("mostly short, detached notes", "a crisp staccato touch", "clipped, staccato notes"),
    "legato": ("smooth, connected legato lines", "a legato touch", "notes that flow into one another"),
    "mixed": ("a mix of legato and staccato playing", "both connected and detached notes"),
}

_REGISTER_PHRASES: dict[str, tuple[str, ...]] = {
    "low": ("a low register", "the lower register", "a dark, low range"),
    "middle": ("the middle register", "a central register", "a mid-range register"),
    "high": ("a high register", "the upper register", "a bright, high range"),
    "wide": ("a wide range", "a broad span of registers", "a wide register"),
}

_CONTOUR_PHRASES: dict[str, tuple[str, ...]] = {
    "ascending": ("rises overall", "climbs upward over time", "follows a rising contour"),
    "descending": ("falls overall", "drifts downward over time", "follows a falling contour"),
    "arch": ("rises and then falls in an arch", "traces an arch shape", "follows an arch-shaped contour"),
    "valley": ("dips and then rises again", "traces a valley shape", "follows a valley-shaped contour"),
    "wave": ("moves up and down in waves", "follows a wave-like contour", "rises and falls repeatedly"),
    "static": ("stays around the same pitches", "keeps a fairly static contour", "hovers in one place"),
}

_ITALIAN_GLOSS = {
    "grave": "very slow",
    "largo": "very slow",
    "adagio": "slow",
    "andante": "walking-pace",
    "moderato": "moderate",
    "allegro": "fast",
    "vivace": "lively",
    "presto": "very fast",
    "prestissimo": "extremely fast",
}

_METER_NAMES = {
    "4/4": ("common time",),
    "2/2": ("cut time",),
    "3/4": ("triple time", "three beats to the bar"),
    "2/4": ("duple time", "two beats to the bar"),
    "6/8": ("compound duple time",),
    "9/8": ("compound triple time",),
    "12/8": ("compound quadruple time",),
}

# Mood impressions per (mode, speed); dynamics add a colour. These are never presented as facts.
_MOOD_GUESS = {
    ("major", "slow"): ("calm", "peaceful", "tender", "serene"),
    ("major", "moderate"): ("warm", "pleasant", "relaxed", "content"),
    ("major", "fast"): ("cheerful", "bright", "upbeat", "joyful"),
    ("minor", "slow"): ("melancholic", "sad", "sombre", "mournful"),
    ("minor", "moderate"): ("wistful", "pensive", "bittersweet", "reflective"),
    ("minor", "fast"): ("dramatic", "tense", "restless", "urgent"),
}
_MOOD_DYNAMICS = {
    "pp": ("gentle", "intimate", "delicate"),
    "p": ("gentle", "intimate"),
    "f": ("energetic", "bold"),
    "ff": ("intense", "powerful", "energetic"),
}
_HEDGES = ("perhaps", "possibly", "probably", "arguably")

# a name ending in an initial ("Tyler P.") followed by a sentence's full stop; not "..." or a title's "2 .. Gone"
_DOUBLE_STOP = re.compile(r"(?<=\b[A-Z])\.\.(?=\s|$)")
_NOUNS = ("piece", "composition", "track", "piece of music", "work", "tune")
_MASS_NOUNS = ("brass", "synth brass", "applause", "breath noise", "guitar fret noise", "seashore")


# ---------------------------------------------------------------- reading the dict


def present(analysis: dict[str, Any], key: str) -> bool:
    """Whether a field carries a usable value (not absent, None, NaN, empty or "unknown")."""
    v = analysis.get(key)
    if v is None:
        return False
    if isinstance(v, float) and math.isnan(v):
        return False
    if isinstance(v, str) and v.strip().lower() in ("", "unknown", "none", "nan", "n/a"):
        return False
    return not (isinstance(v, (list, tuple, dict)) and len(v) == 0)


def get(analysis: dict[str, Any], key: str) -> Any:
    """The field's value, or None where ``present`` says it is missing."""
    return analysis[key] if present(analysis, key) else None


def instrument_words(analysis: dict[str, Any]) -> list[str]:
    """Plain instrument words, most notes first, without repeats (several GM programs share a word)."""
    words = get(analysis, "instrument_words")
    if words is None:
        names = get(analysis, "instruments") or []
        words = [n.lower() for n in names]
    out: list[str] = []
    for w in words:
        w = str(w).strip()
        if w and w not in out:
            out.append(w)
    if get(analysis, "has_drums") and "drums" not in out:
        out.append("drums")
    return out


def bpm_value(analysis: dict[str, Any]) -> int | None:
    bpm = get(analysis, "bpm")
    return None if bpm is None else int(round(float(bpm)))


def tempo_simple(analysis: dict[str, Any]) -> str | None:
    """Slow / Moderate / Fast / Very fast, from the dict or from bpm with the project's 80/120/160 cuts."""
    word = get(analysis, "tempo_word_simple")
    if word is not None:
        return str(word)
    bpm = get(analysis, "bpm")
    if bpm is None:
        return None
    bpm = float(bpm)
    return "Slow" if bpm < 80 else "Moderate" if bpm < 120 else "Fast" if bpm < 160 else "Very fast"


def mood_words(analysis: dict[str, Any]) -> list[str]:
    """Mood words given as metadata (a string or a list), as facts."""
    mood = get(analysis, "mood")
    if mood is None:
        return []
    if isinstance(mood, str):
        return [m.strip() for m in re.split(r"[,;/]", mood) if m.strip()]
    return [str(m).strip() for m in mood if str(m).strip()]


def mood_guess(analysis: dict[str, Any]) -> tuple[list[str], list[str]]:
    """A guessed mood and the evidence it rests on, or ([], []) without mode and tempo.

    Returns candidate mood words (best first) and the reasons ("the minor mode", "the slow tempo", ...).
    Callers must present the words as a guess.
    """
    mode = get(analysis, "mode")
    speed = tempo_simple(analysis)
    if mode not in ("major", "minor") or speed is None:
        return [], []
    bucket = {"Slow": "slow", "Moderate": "moderate"}.get(speed, "fast")
    words = list(_MOOD_GUESS[(mode, bucket)])
    reasons = [f"the {mode} mode", f"the {speed.lower()} tempo"]
    dyn = get(analysis, "dynamics")
    if dyn in _MOOD_DYNAMICS:
        words += [w for w in _MOOD_DYNAMICS[dyn] if w not in words]
        reasons.append(f"the {DYNAMICS_WORDS[dyn][0]} dynamics")
    return words, reasons


# ---------------------------------------------------------------- wording helpers


def article(word: str) -> str:
    """'a violin', 'an oboe', 'drums' (plural and mass nouns take no article)."""
    w = word.strip()
    low = w.lower()
    if low in _MASS_NOUNS or (low.endswith("s") and not low.endswith("ss")):
        return w
    return ("an " if low[:1] in "aeiou" else "a ") + w


def the(word: str) -> str:
    """'the piano', 'the drums'."""
    return "the " + word.strip()


def _verb(word: str, singular: str, plural: str) -> str:
    return singular if article(word) != word.strip() or word.strip().lower() in _MASS_NOUNS else plural


def join_list(items: Sequence[str], rng: random.Random | None = None, conj: str = "and") -> str:
    """'a, b and c'; with an rng, sometimes with the serial comma."""
    items = [str(i) for i in items]
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} {conj} {items[1]}"
    comma = "," if rng is not None and rng.random() < 0.3 else ""
    return ", ".join(items[:-1]) + f"{comma} {conj} " + items[-1]


def cap(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def spelled_key(key: str) -> str:
    """'Eb major' -> 'E-flat major', 'F# minor' -> 'F-sharp minor'."""
    m = re.fullmatch(r"([A-G])([#b]?)\s+(major|minor)", key.strip())
    if not m:
        return key
    return f"{m.group(1)}{_SPELLED_ACCIDENTAL.get(m.group(2), '')} {m.group(3)}"


def chord_symbol(label: str) -> str:
    """Harte label to lead-sheet symbol: 'A:min' -> 'Am', 'G:7' -> 'G7', 'F:maj7' -> 'Fmaj7'."""
    label = str(label).strip()
    if ":" not in label:
        return label
    root, _, rest = label.partition(":")
    quality, _, bass = rest.partition("/")
    suffix = {
        "maj": "", "min": "m", "7": "7", "maj7": "maj7", "min7": "m7", "dim": "dim", "aug": "aug",
        "sus4": "sus4", "sus2": "sus2", "dim7": "dim7", "hdim7": "m7b5", "min6": "m6", "maj6": "6",
        "9": "9", "min9": "m9", "maj9": "maj9", "minmaj7": "m(maj7)",
    }.get(quality, quality)  # fmt: skip
    # Harte basses are scale degrees, which a caption reader would not decode; the root chord is enough.
    del bass
    return root + suffix


def chord_pattern_symbols(analysis: dict[str, Any]) -> list[str]:
    pattern = get(analysis, "chord_pattern") or []
    return [chord_symbol(c) for c in pattern if str(c).strip() not in ("N", "")]


def common_chords(analysis: dict[str, Any], n: int = 4) -> list[str]:
    """Chord symbols holding the most time, from the chord list (no-chord spans skipped)."""
    total: dict[str, float] = {}
    for c in get(analysis, "chords") or []:
        label = str(c.get("label", "N"))
        if label == "N":
            continue
        sym = chord_symbol(label)
        total[sym] = total.get(sym, 0.0) + max(0.0, float(c.get("end", 0.0)) - float(c.get("start", 0.0)))
    return [s for s, _ in sorted(total.items(), key=lambda kv: -kv[1])[:n]]


def format_duration(seconds: float, rng: random.Random | None = None) -> str:
    """'45 seconds', '2 minutes 5 seconds' or (with an rng, sometimes) '125 seconds'."""
    s = int(round(float(seconds)))
    if s < 60 or (rng is not None and s < 600 and rng.random() < 0.25):
        return f"{s} seconds"
    minutes, rest = divmod(s, 60)
    m_word = "minute" if minutes == 1 else "minutes"
    if rest == 0:
        return f"{minutes} {m_word}"
    return f"{minutes} {m_word} {rest} second{'s' if rest != 1 else ''}"


def tune_type_noun(tune_type: str) -> str:
    """Nottingham collection names to a singular noun: 'jigs' -> 'jig', 'christmas carols' -> 'Christmas carol'."""
    t = str(tune_type).strip()
    paren = re.search(r"\(([^)]*)\)", t)
    base = re.sub(r"\s*\([^)]*\)", "", t).strip()
    if "collection" in base.lower():
        inner = _singular(paren.group(1)) if paren else "tune"
        name = base.lower().replace("collection", "").strip().title()
        return f"{inner} from the {name} collection"
    noun = _singular(base)
    for proper in ("christmas", "morris", "playford"):
        noun = re.sub(rf"\b{proper}\b", proper.title(), noun)
    return noun


def _singular(phrase: str) -> str:
    words = phrase.strip().split()
    if not words:
        return phrase
    last = words[-1]
    if re.search(r"(z|x|s|ch|sh)es$", last):
        last = last[:-2]
    elif last.endswith("s") and not last.endswith("ss"):
        last = last[:-1]
    return " ".join(words[:-1] + [last])


def era_phrase(era: str) -> str:
    """'Romantic' -> 'the Romantic era'; '19th century' -> 'the 19th century'."""
    e = str(era).strip()
    if re.search(r"\b(era|period|century|age)\b", e, re.IGNORECASE):
        return e if e.lower().startswith("the ") else f"the {e}"
    return f"the {e} era"


def meter_word(ts: str, rng: random.Random) -> str | None:
    names = _METER_NAMES.get(ts)
    return rng.choice(names) if names else None


def _key_text(analysis: dict[str, Any], rng: random.Random) -> str:
    key = str(get(analysis, "key"))
    return spelled_key(key) if rng.random() < 0.2 else key


def _key_hedge(analysis: dict[str, Any], rng: random.Random) -> str:
    conf = get(analysis, "key_confidence")
    # A weak key estimate is stated with a hedge rather than dropped: the key is still the best guess.
    if conf is not None and float(conf) < 0.4:
        return rng.choice(("probably ", "most likely "))
    return ""


def _tempo_frag(analysis: dict[str, Any], rng: random.Random) -> str:
    bpm = bpm_value(analysis)
    word = get(analysis, "tempo_word")
    simple = tempo_simple(analysis)
    approx = "around " if get(analysis, "bpm_source") == "estimated" else rng.choice(("", "", "about "))
    options: list[str] = []
    if bpm is not None:
        options += [f"at {approx}{bpm} bpm", f"at {approx}{bpm} beats per minute", f"at a tempo of {approx}{bpm} bpm"]
    if word is not None:
        options += [f"at {indefinite_article(word)} {word} tempo", f"at {indefinite_article(word)} {word} pace"]
    if simple is not None:
        options.append(f"at a {simple.lower()} pace")
    if bpm is not None and simple is not None:
        options.append(f"at a {simple.lower()} tempo of {approx}{bpm} bpm")
    return rng.choice(options)


def indefinite_article(word: str) -> str:
    """The article before a word, by its first letter: "an" (oboe, E minor) or "a" (piano); no capital."""
    return "an" if str(word)[:1].lower() in "aeiou" else "a"


def _tempo_sentence(analysis: dict[str, Any], rng: random.Random, subj: str) -> str:
    bpm = bpm_value(analysis)
    word = get(analysis, "tempo_word")
    simple = tempo_simple(analysis)
    est = get(analysis, "bpm_source") == "estimated"
    approx = "around " if est else ""
    options: list[str] = []
    if bpm is not None:
        options += [
            f"The tempo is {approx}{bpm} bpm.",
            f"{subj} moves at {approx}{bpm} beats per minute.",
            f"{subj} is played at {approx}{bpm} bpm.",
            f"It runs at a tempo of {approx}{bpm} beats per minute.",
        ]
    if word is not None:
        gloss = _ITALIAN_GLOSS.get(str(word).lower())
        options += [f"The tempo is {word}.", f"{subj} is taken at {indefinite_article(word)} {word} tempo."]
        if gloss:
            options.append(f"The tempo marking would be {word}, a {gloss} pace.")
    if simple is not None:
        options += [f"The tempo is {simple.lower()}.", f"{subj} unfolds at a {simple.lower()} pace."]
    if bpm is not None and word is not None:
        options += [
            f"The tempo is {word}, at {approx or 'about '}{bpm} bpm.",
            f"At {approx}{bpm} bpm, {subj.lower() if subj != 'It' else 'it'} sits in {word} territory.",
            f"{subj} keeps {indefinite_article(word)} {word} tempo of {approx}{bpm} beats per minute.",
        ]
    if bpm is not None and simple is not None:
        options.append(f"The pace is {simple.lower()}, around {bpm} beats per minute.")
    return rng.choice(options)


# ---------------------------------------------------------------- facts and their sentences


def _available_facts(analysis: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Core facts (MidiCaps tags, metadata) and extra facts (finer analysis) the dict can support."""
    core: list[str] = []
    if instrument_words(analysis):
        core.append("instruments")
    if present(analysis, "genre"):
        core.append("genre")
    if mood_words(analysis):
        core.append("mood")
    if present(analysis, "composer"):
        core.append("composer")
    elif present(analysis, "era"):
        core.append("era")
    if present(analysis, "tune_type"):
        core.append("tune_type")
    if present(analysis, "key"):
        core.append("key")
    if any(present(analysis, k) for k in ("bpm", "tempo_word", "tempo_word_simple")):
        core.append("tempo")
    if present(analysis, "time_signature"):
        core.append("meter")
    if chord_pattern_symbols(analysis) or common_chords(analysis):
        core.append("chords")
    if present(analysis, "duration") or present(analysis, "duration_word"):
        core.append("duration")
    extra: list[str] = []
    for key in ("texture", "dynamics", "articulation", "contour", "region", "title", "artist"):
        if present(analysis, key):
            extra.append(key)
    if present(analysis, "pitch_low") and present(analysis, "pitch_high") or present(analysis, "register"):
        extra.append("range")
    if present(analysis, "note_value") or analysis.get("swing") is True or present(analysis, "syncopation"):
        extra.append("rhythm")
    if present(analysis, "note_density"):
        extra.append("density")
    if len({s.get("key") for s in get(analysis, "key_segments") or [] if s.get("key")}) > 1:
        extra.append("modulation")
    if present(analysis, "composer") and present(analysis, "era"):
        extra.append("era")
    if not mood_words(analysis) and mood_guess(analysis)[0]:
        extra.append("mood_guess")
    return core, extra


def _fact_sentence(fact: str, a: dict[str, Any], rng: random.Random, subj: str) -> str | None:
    """One sentence stating ``fact``; None when the dict turns out not to support a sentence."""
    if fact == "instruments":
        words = instrument_words(a)
        listed = join_list([article(w) for w in words], rng)
        if len(words) == 1:
            w = words[0]
            return rng.choice(
                (
                    f"{subj} is played on {article(w)} alone.",
                    f"The only instrument is {article(w)}.",
                    f"It is a solo for {w}.",
                    f"{cap(the(w))} {_verb(w, 'carries', 'carry')} the whole {rng.choice(('piece', 'texture'))}.",
                )
            )
        lead, rest = words[0], words[1:]
        rest_listed = join_list([article(w) for w in rest], rng)
        return rng.choice(
            (
                f"The instrumentation consists of {listed}.",
                f"{cap(listed)} can be heard.",
                f"{subj} features {listed}.",
                f"{cap(the(lead))} {_verb(lead, 'is', 'are')} the busiest part, joined by {rest_listed}.",
                f"Most of the notes belong to {the(lead)}, with {rest_listed} adding to the sound.",
                f"The ensemble is made up of {listed}.",
                f"You can hear {listed} in this {rng.choice(('piece', 'arrangement', 'track'))}.",
            )
        )
    if fact == "key":
        key = _key_text(a, rng)
        hedge = _key_hedge(a, rng)
        options = [
            f"{subj} is {hedge}in {key}.",
            f"The key is {hedge}{key}.",
            f"{subj} is {hedge}written in the key of {key}.",
            f"It is {hedge}set in {key}.",
            f"The tonal centre is {hedge}{key}.",
        ]
        if not hedge:
            options.append(f"{cap(key)} is the home key.")
        return rng.choice(options)
    if fact == "tempo":
        return _tempo_sentence(a, rng, subj)
    if fact == "meter":
        ts = str(get(a, "time_signature"))
        name = meter_word(ts, rng)
        options = [
            f"The time signature is {ts}.",
            f"{subj} is in {ts} time.",
            f"It keeps a steady {ts} meter.",
            f"The meter is {ts}.",
            f"{subj} is written in {ts}.",
        ]
        if name:
            options.append(f"It is in {ts}, {name}.")
        return rng.choice(options)
    if fact == "chords":
        pattern = chord_pattern_symbols(a)
        count = get(a, "chord_pattern_count")
        if pattern:
            seq = join_list(pattern, rng) if rng.random() < 0.6 else ", ".join(pattern)
            dash = " - ".join(pattern)
            options = [
                f"The main chord progression is {seq}.",
                f"A recurring chord progression of {seq} runs through {subj.lower() if subj != 'It' else 'it'}.",
                f"{subj} often revolves around the chords {seq}.",
                f"Harmonically, the most frequent pattern is {dash}.",
                f"The chord sequence {seq} is the harmonic backbone.",
            ]
            if count is not None and int(count) > 1:
                options.append(f"The progression {dash} comes back {int(count)} times.")
                options.append(f"The chords {seq} repeat {int(count)} times.")
            elif count is not None and int(count) == 1:
                options = [f"It contains a single {dash} chord sequence.", f"The chords {seq} appear once."]
            return rng.choice(options)
        chords = common_chords(a)
        if not chords:
            return None
        seq = join_list(chords, rng)
        return rng.choice(
            (
                f"The harmony is built mainly on {seq}.",
                f"The most common chords are {seq}.",
                f"{subj} leans mostly on the chords {seq}.",
            )
        )
    if fact == "duration":
        secs = get(a, "duration")
        word = get(a, "duration_word")
        options = []
        if secs is not None:
            d = format_duration(secs, rng)
            options += [f"{subj} lasts about {d}.", f"It runs for roughly {d}.", f"The total length is about {d}."]
            if word is not None:
                options.append(f"At about {d}, it is {article(str(word).lower())}.")
        if word is not None:
            w = str(word).lower()
            options += [f"It is {article(w)}.", f"In length, it is {article(w)}."]
            if w in ("short fragment", "short song"):
                options.append(f"{subj} is quite short.")
            if w == "long piece":
                options.append(f"{subj} is rather long.")
        return rng.choice(options) if options else None
    if fact == "genre":
        g = str(get(a, "genre"))
        return rng.choice(
            (
                f"Stylistically it belongs to {g}.",
                f"It can be described as {g} music.",
                f"The style is {g}.",
                f"The genre is {g}.",
            )
        )
    if fact == "mood":
        moods = mood_words(a)
        m = join_list(moods[:3], rng)
        return rng.choice(
            (
                f"The mood is {m}.",
                f"{subj} feels {m}.",
                f"It has a {m} character.",
                f"The atmosphere is {m}.",
            )
        )
    if fact == "mood_guess":
        words, reasons = mood_guess(a)
        chosen = words[:1] if rng.random() < 0.5 else rng.sample(words, 2)
        m = join_list(chosen)
        because = join_list(rng.sample(reasons, min(2, len(reasons))))
        hedge = rng.choice(_HEDGES)
        return rng.choice(
            (
                f"Judging from {because}, the mood is {hedge} {m}.",
                f"{cap(because)} suggest a {hedge} {m} mood, though that is only a guess.",
                f"It may come across as {m}.",
                f"One might hear it as {m}, though this is a guess from {because}.",
                f"The mood is hard to pin down, but it could feel {m}.",
            )
        )
    if fact == "composer":
        return _composer_sentence(a, rng, subj)
    if fact == "era":
        era = era_phrase(get(a, "era"))
        return rng.choice((f"It comes from {era}.", f"The music belongs to {era}.", f"It dates from {era}."))
    if fact == "tune_type":
        noun = tune_type_noun(get(a, "tune_type"))
        return rng.choice((f"It is {article(noun)}.", f"The tune is {article(noun)}.", f"This is {article(noun)}."))
    if fact == "region":
        r = get(a, "region")
        return rng.choice((f"It comes from {r}.", f"The music has its roots in {r}."))
    if fact == "artist":
        who = get(a, "artist")
        return rng.choice((f"The original artist is {who}.", f"The song is originally by {who}."))
    if fact == "title":
        t = get(a, "title")
        return rng.choice((f'The title is "{t}".', f'It is called "{t}".', f'The piece is titled "{t}".'))
    if fact == "texture":
        t = get(a, "texture")
        phrase = rng.choice(TEXTURE_PHRASES.get(t, (f"a {t} texture",)))
        return rng.choice(
            (
                f"The texture is {t}.",
                f"{subj} is built from {phrase}.",
                f"Texturally, it offers {phrase}.",
                f"It has {phrase}.",
            )
        )
    if fact == "dynamics":
        d = get(a, "dynamics")
        word = rng.choice(DYNAMICS_WORDS.get(d, (d,)))
        return rng.choice(
            (
                f"The dynamics are mostly {word}.",
                f"It is played at a mostly {word} level.",
                f"{subj} stays {word} for most of its length.",
                f"The overall dynamic level is {word}.",
            )
        )
    if fact == "articulation":
        art = get(a, "articulation")
        phrase = rng.choice(_ARTICULATION_PHRASES.get(art, (f"{art} articulation",)))
        return rng.choice((f"The playing uses {phrase}.", f"{subj} is played with {phrase}.", f"Expect {phrase}."))
    if fact == "contour":
        c = get(a, "contour")
        phrase = rng.choice(_CONTOUR_PHRASES.get(c, (f"has a {c} contour",)))
        return rng.choice((f"The melodic line {phrase}.", f"Its pitch {phrase}.", f"Overall, the music {phrase}."))
    if fact == "range":
        return _range_sentence(a, rng, subj)
    if fact == "rhythm":
        return _rhythm_sentence(a, rng)
    if fact == "density":
        dens = float(get(a, "note_density"))
        if dens >= 10:
            return rng.choice(("The writing is busy and dense.", f"With about {dens:.0f} notes a second, it is dense."))
        if dens <= 2:
            return rng.choice(("The writing is sparse.", "The notes are sparse, with plenty of space."))
        return f"It plays about {dens:.0f} notes per second." if rng.random() < 0.5 else None
    if fact == "modulation":
        keys: list[str] = []
        for s in get(a, "key_segments") or []:
            k = s.get("key")
            if k and k not in keys:
                keys.append(str(k))
        main = get(a, "key")
        others = [k for k in keys if k != main] or keys[1:]
        if not others:
            return None
        o = join_list(others[:3], rng)
        return rng.choice(
            (
                f"Along the way it passes through {o}.",
                f"The key shifts at times, touching {o}.",
                f"There are passages in {o}.",
            )
        )
    return None


def life_span(a: dict[str, Any]) -> str:
    """'1810-1849', 'born 1957' or '' from the optional metadata years ``birth`` and ``death``."""
    birth, death = get(a, "birth"), get(a, "death")
    if birth is not None and death is not None:
        return f"{int(birth)}-{int(death)}"
    if birth is not None:
        return f"born {int(birth)}"
    return f"died {int(death)}" if death is not None else ""


def _composer_sentence(a: dict[str, Any], rng: random.Random, subj: str) -> str:
    who = str(get(a, "composer"))
    life = life_span(a)
    if life and rng.random() < 0.4:
        who = f"{who} ({life})"
    # The era has a sentence of its own (see _available_facts), so it is not repeated here.
    nat = get(a, "nationality")
    desc = " ".join(x for x in (str(nat) if nat else "", "composer") if x)
    options = [
        f"{subj} was composed by {who}.",
        f"It was written by {who}.",
        f"The composer is {who}.",
        f"This is a work by {who}.",
    ]
    if nat:
        options += [
            f"It was written by the {desc} {who}.",
            f"{who}, {article(desc)}, composed {subj.lower() if subj != 'It' else 'it'}.",
        ]
    return rng.choice(options)


def _range_sentence(a: dict[str, Any], rng: random.Random, subj: str) -> str | None:
    low, high = get(a, "pitch_low"), get(a, "pitch_high")
    reg = get(a, "register")
    options: list[str] = []
    if low and high:
        options += [f"The notes span from {low} to {high}.", f"{subj} covers a range from {low} up to {high}."]
        semis = get(a, "pitch_range_semitones")
        if semis is not None:
            options.append(f"The pitch range runs from {low} to {high}, {int(semis)} semitones.")
    if reg in _REGISTER_PHRASES:
        phrase = rng.choice(_REGISTER_PHRASES[reg])
        options += [f"Most of it lies in {phrase}.", f"{subj} sits in {phrase}."]
        if low and high:
            options.append(f"It uses {phrase}, from {low} to {high}.")
    return rng.choice(options) if options else None


def _rhythm_sentence(a: dict[str, Any], rng: random.Random) -> str | None:
    parts: list[str] = []
    nv = get(a, "note_value")
    if nv:
        parts.append(rng.choice((f"moves mainly in {nv}", f"is driven by {nv}", f"is built mostly on {nv}")))
    sync = get(a, "syncopation")
    # Only the clear ends of the 0..1 scale are worth a claim; the middle says little.
    if sync is not None and float(sync) >= 0.35:
        parts.append(rng.choice(("is strongly syncopated", "pushes against the beat with syncopation")))
    elif sync is not None and float(sync) <= 0.08:
        parts.append(rng.choice(("stays squarely on the beat", "has hardly any syncopation")))
    if a.get("swing") is True:
        parts.append(rng.choice(("has a swing feel", "swings")))
    if not parts:
        return None
    lead = "The rhythm " if rng.random() < 0.5 else "Rhythmically, it "
    return lead + join_list(parts) + "."


# ---------------------------------------------------------------- the opening sentence


def _noun(a: dict[str, Any], rng: random.Random) -> str:
    if present(a, "tune_type"):
        return tune_type_noun(get(a, "tune_type"))
    word = str(get(a, "duration_word") or "").lower()
    if word == "short fragment":
        return rng.choice(("fragment", "excerpt", "snippet"))
    return rng.choice(_NOUNS)


def _opening(a: dict[str, Any], facts: list[str], rng: random.Random) -> tuple[str, list[str], str]:
    """First sentence naming the piece and absorbing some facts; returns it, the facts used and the noun."""
    used: list[str] = []
    adjs: list[str] = []
    noun = _noun(a, rng)
    tune = present(a, "tune_type")

    if "duration" in facts and rng.random() < 0.5:
        word = str(get(a, "duration_word") or "").lower()
        adj = {"short fragment": "short", "short song": "short", "long piece": "long"}.get(word)
        if adj and adj not in noun:
            adjs.append(adj)
            used.append("duration")
        elif word == "short fragment" and noun in ("fragment", "excerpt", "snippet"):
            adjs.append("short")
            used.append("duration")
    if "tempo" in facts and rng.random() < 0.35 and tempo_simple(a):
        simple = tempo_simple(a).lower()
        adjs.append({"moderate": "moderately paced"}.get(simple, simple))
        used.append("tempo")
    if "mood" in facts and rng.random() < 0.5:
        adjs.append(mood_words(a)[0])
        used.append("mood")
    if "genre" in facts and rng.random() < 0.8:
        adjs.append(str(get(a, "genre")))
        used.append("genre")
    if "tune_type" in facts:
        used.append("tune_type")

    words = instrument_words(a) if "instruments" in facts else []
    solo = len(words) == 1 and words[0] != "drums"
    if solo and rng.random() < 0.6:
        adjs.append(rng.choice((f"solo {words[0]}", words[0])) if not tune else words[0])
        used.append("instruments")
        words = []

    # Quality adjectives (length, pace, mood) are coordinate and take commas; classifiers (genre,
    # instrument) stay bare next to the noun: "a long, slow piano piece".
    n_quality = sum(1 for f in ("duration", "tempo", "mood") if f in used)
    quality, classifier = adjs[:n_quality], adjs[n_quality:]
    np = " ".join(([", ".join(quality)] if quality else []) + classifier + [noun])
    np = f"{indefinite_article(np)} {np}"

    frags: list[str] = []
    if "composer" in facts and rng.random() < 0.7:
        frags.append(rng.choice(("by", "composed by", "written by")) + " " + str(get(a, "composer")))
        used.append("composer")
    frag_pool = [f for f in ("key", "tempo", "meter") if f in facts and f not in used]
    rng.shuffle(frag_pool)
    for f in frag_pool[: rng.choice((0, 1, 1, 2))]:
        if f == "key":
            frags.append(f"{_key_hedge(a, rng)}in {_key_text(a, rng)}")
        elif f == "tempo":
            frags.append(_tempo_frag(a, rng))
        else:
            frags.append(rng.choice((f"in {get(a, 'time_signature')} time", f"in {get(a, 'time_signature')}")))
        used.append(f)
    tail = (" " + " ".join(frags)) if frags else ""

    if words:
        used.append("instruments")
        bare = join_list(words, rng)
        listed = join_list([article(w) for w in words], rng)
        plural = len(words) > 1 or words[0].endswith("s")
        sentence = rng.choice(
            (
                f"{cap(np)}{tail} for {bare}.",
                f"{cap(np)}{tail} performed by {listed}.",
                f"{cap(np)}{tail} featuring {listed}.",
                f"{cap(np)}{tail}, played on {listed}.",
                f"{cap(listed)} {'play' if plural else 'plays'} {np}{tail}.",
                f"This is {np}{tail} with {listed}.",
                f"Here is {np}{tail} scored for {bare}.",
            )
        )
    else:
        sentence = rng.choice((f"{cap(np)}{tail}.", f"This is {np}{tail}.", f"Here we have {np}{tail}."))
    return sentence, used, noun


# ---------------------------------------------------------------- captions


def _choose_facts(core: list[str], extra: list[str], detail: str, rng: random.Random) -> list[str]:
    # Metadata identity (composer, genre, tune type, mood) is rarer and more informative than the musical
    # tags, so it is kept with higher odds at every level.
    identity = [f for f in core if f in ("composer", "genre", "tune_type", "mood", "era")]
    musical = [f for f in core if f not in identity]
    rng.shuffle(musical)
    if "instruments" in musical and rng.random() < 0.85:
        musical.remove("instruments")
        musical.insert(0, "instruments")
    if detail == "short":
        keep_identity = [f for f in identity if rng.random() < 0.6]
        n_musical = max(0 if keep_identity else 1, rng.choice((2, 2, 3)) - len(keep_identity))
        n_extra = 0
    elif detail == "medium":
        keep_identity = [f for f in identity if rng.random() < 0.85]
        n_musical = max(2, rng.choice((3, 4, 5)) - len(keep_identity))
        n_extra = rng.choice((0, 1, 1, 2))
    else:
        keep_identity = list(identity)
        n_musical = len(musical) - rng.choice((0, 0, 1))
        n_extra = max(2, len(extra) - rng.choice((0, 1, 2, 3)))
    chosen = keep_identity + musical[:n_musical]
    extras = list(extra)
    rng.shuffle(extras)
    chosen += extras[:n_extra]
    # A key change reads oddly when the home key itself goes unmentioned.
    if "modulation" in chosen and "key" not in chosen:
        chosen.remove("modulation")
    return chosen


def make_caption(analysis: dict[str, Any], rng: random.Random, detail: str = "medium") -> str:
    """One caption of the given detail level ("short", "medium" or "long") stating only facts in ``analysis``."""
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {DETAILS}, got {detail!r}")
    core, extra = _available_facts(analysis)
    if not core and not extra:
        return rng.choice(("A piece of music.", "A short piece of music.", "A MIDI piece."))
    facts = _choose_facts(core, extra, detail, rng)
    opening, used, noun = _opening(analysis, facts, rng)
    rest = [f for f in facts if f not in used]
    rng.shuffle(rest)

    sentences: list[str] = []
    # Pairs that read well in one sentence are sometimes merged, which shortens and varies the rhythm of
    # the prose.
    if "key" in rest and "meter" in rest and rng.random() < 0.35:
        key = _key_text(analysis, rng)
        ts = get(analysis, "time_signature")
        hedge = _key_hedge(analysis, rng)
        sentences.append(
            rng.choice(
                (
                    f"It is {hedge}in {key} and {ts} time.",
                    f"The key is {hedge}{key} and the time signature is {ts}.",
                    f"Set {hedge}in {key}, it keeps {indefinite_article(ts)} {ts} meter.",
                )
            )
        )
        rest.remove("key")
        rest.remove("meter")
    if "tempo" in rest and "meter" in rest and rng.random() < 0.35:
        verb = rng.choice(("it moves", "the music moves", "it is played"))
        sentences.append(cap(f"{verb} in {get(analysis, 'time_signature')} {_tempo_frag(analysis, rng)}."))
        rest.remove("tempo")
        rest.remove("meter")
    for fact in rest:
        subj = rng.choice(("It", "It", "The piece", "The music", f"This {noun}", f"The {noun}"))
        s = _fact_sentence(fact, analysis, rng, subj)
        if s:
            sentences.append(cap(s))
    rng.shuffle(sentences)
    # a name that ends in an abbreviation ("Tyler P.") must not end its sentence with a second full stop
    return _DOUBLE_STOP.sub(".", " ".join([opening] + sentences))


def make_captions(analysis: dict[str, Any], seed: int, n: int = 3) -> list[str]:
    """``n`` captions for one analysis, reproducible by ``seed``, cycling short/medium/long and avoiding repeats."""
    rng = random.Random(seed)
    out: list[str] = []
    for i in range(n):
        detail = DETAILS[i % len(DETAILS)]
        caption = make_caption(analysis, rng, detail)
        for _ in range(5):
            if caption not in out:
                break
            caption = make_caption(analysis, rng, detail)
        out.append(caption)
    return out


FACT_CAPTION_INSTRUMENTS = 6  # a fact caption names this many instruments at most (most notes first)
_READS_AS_FACT = re.compile(r"\b(soft|quiet|gentle|loud|strong|hushed|slow|fast|moderate|major|minor)\b",
                            re.IGNORECASE)


def fact_caption(analysis: dict[str, Any]) -> str:
    """Two or three sentences in one fixed wording that state, each only where the dict has it: genre and
    form (metadata), instruments, key, meter and simple tempo; texture and dynamics; the style (metadata).

    What a small understanding model is trained to write for `describe` (issue 15: 2-4 sentences, every fact
    right): the wording never varies, so what it learns is the facts, and each fact is one that
    `midilm.evaluate.caption_facts` reads and checks. The tempo is a plain word (slow / moderate / fast /
    very fast), not a bpm figure; no chords, range or mood, which such a model cannot yet read reliably.
    """
    words = instrument_words(analysis)[:FACT_CAPTION_INSTRUMENTS]
    genre, tune = get(analysis, "genre"), get(analysis, "tune_type")
    noun = " ".join(str(x) for x in (genre, tune_type_noun(tune) if tune else "piece") if x)
    head = f"{cap(indefinite_article(noun))} {noun}" + (f" for {join_list(words)}" if words else "")
    key, meter, simple = get(analysis, "key"), get(analysis, "time_signature"), tempo_simple(analysis)
    where = " and ".join(x for x in (str(key) if key else "", f"{meter} time" if meter else "") if x)
    first = [head] + ([f"in {where}"] if where else []) + ([f"at a {simple.lower()} tempo"] if simple else [])
    sentences = [", ".join(first) + "."]
    texture, dynamics = get(analysis, "texture"), get(analysis, "dynamics")
    parts = []
    if texture is not None:
        phrase = TEXTURE_PHRASES.get(str(texture), ("",))[0] if words != ["drums"] else ""
        parts.append(f"its texture is {texture}" + (f" ({phrase})" if phrase else ""))
    if dynamics is not None:
        parts.append(f"its dynamics are {DYNAMICS_WORDS.get(str(dynamics), (str(dynamics),))[0]} ({dynamics}) "
                     "on the whole")
    if parts:
        sentences.append(cap(" and ".join(parts)) + ".")
    style = get(analysis, "style_detail")
    if style is None or _READS_AS_FACT.search(str(style)):  # a style "soft" would read as the dynamics
        style = genre
    if style is not None:
        sentences.append(f"Its style is {style}.")
    return " ".join(sentences)
