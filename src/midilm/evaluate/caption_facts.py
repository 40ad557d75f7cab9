"""Caption factual precision: which facts a free-text caption states, and how many agree with the analysis.

A caption is split into sentences; each sentence is searched for statements of the key, the mode, the tempo
(a bpm figure, an Italian tempo word or a plain word such as "fast"), the meter, the instruments, the
texture and the dynamics. Every statement found is one fact, judged with the dataset's own rule
(`midilm.annotate.questions.answer_is_correct`) on the words that state it, against the analysis the
caption is about (a dataset row). Precision is the share of stated facts that are right; a caption that
states nothing has no precision (it is counted, with its length, but not in the share).

The search is deliberately narrow (it reads the phrasings the dataset's captions use and plain English
equivalents) so that a fact it finds is one the caption really states:
- quoted words (a title such as "Quartet in A major") state nothing;
- a sentence about a key change ("modulates", "moves to ...", "passes through ...") states no key: its keys
  are not the home key;
- the mode counts only where no key is named in the sentence ("a minor-mode piece");
- a plain tempo word next to an Italian one is the Italian word's gloss ("Allegro, a fast pace") and is not
  counted again; a bare number is not a tempo (durations are numbers too): only "N bpm" or "N beats per minute";
- "beat" and "keys" are no instruments (the instrument lookup reads them as drums and piano);
- "piano" is an instrument, never a dynamic (the dataset's captions never use it for loudness);
- each distinct instrument named is one fact, right when the piece has it (the analysis's instrument words
  through the same General MIDI lookup).
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

FACT_TYPES = ("key", "mode", "tempo", "meter", "instruments", "texture", "dynamics")
MIN_WORDS = 25  # issue 15's goal: captions of at least this many words

_QUOTED = re.compile(r'"[^"]*"|\u201c[^\u201d]*\u201d')  # titles: their words are not facts about the notes
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_MODULATION = re.compile(r"\bmodulat|\bmoves? to\b|\bkey change|\bshifts? to\b|\bturns? to\b|\bgoes to\b|"
                         r"\bkey (?:moves|shifts)\b|\btouching\b|\bpass(?:es)? through\b|\bpassages? in\b|"
                         r"\balong the way\b|\bvisits?\b", re.IGNORECASE)
_MODE = re.compile(r"\b(major|minor)\b(?!\s+(?:second|third|sixth|seventh|chord|triad))", re.IGNORECASE)
_BPM = re.compile(r"(\d+(?:\.\d+)?)\s*(?:bpm|beats\s+(?:per|a)\s+minute)", re.IGNORECASE)
_ITALIAN = re.compile(r"\b(grave|largo|adagio|andante|moderato|allegro|vivace|presto|prestissimo)\b", re.IGNORECASE)
_SIMPLE = re.compile(r"\b(very fast|fast|moderate|slow)\b(?![- ](?:moving|changing|notes?|runs?|passages?))",
                     re.IGNORECASE)
_METER = re.compile(r"(?<![\d/])\d{1,2}\s*/\s*\d{1,2}(?![\d/])|\bcommon time\b|\bcut time\b|\balla breve\b",
                    re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z\u00C0-\u024F0-9][\w'\-]*")
# words the instrument lookup reads as instruments that a caption uses otherwise ("on the beat", "other keys")
_NOT_INSTRUMENTS = re.compile(r"\bbeats?\b|\bkeys\b", re.IGNORECASE)
# "piano" names the instrument; "mezzo-piano" is a dynamic
_PIANO_INSTRUMENT = re.compile(r"(?<!mezzo-)(?<!mezzo )\bpiano\b", re.IGNORECASE)


def sentences(text: str) -> list[str]:
    """The caption's sentences (split after . ! ? before a capital or a quote)."""
    return [s.strip() for s in _SENTENCE.split(str(text or "").strip()) if s.strip()]


def word_count(text: str) -> int:
    """Words in the caption (runs of letters or digits; "4/4" is two, "mezzo-forte" one)."""
    return len(_WORD.findall(str(text or "")))


def caption_facts(caption: str) -> list[tuple[str, str]]:
    """[(fact type, the words stating it)] in caption order; types from FACT_TYPES."""
    from midilm.annotate.questions import normalise_key, parse_answer

    facts: list[tuple[str, str]] = []
    seen_instruments: set[str] = set()
    for sentence in sentences(caption):
        sentence = _QUOTED.sub('""', sentence)
        modulation = bool(_MODULATION.search(sentence))
        key = None if modulation else normalise_key(sentence)
        if key is not None:
            facts.append(("key", key))
        elif not modulation and (m := _MODE.search(sentence)):
            facts.append(("mode", m.group(1).lower()))
        if m := _BPM.search(sentence):
            facts.append(("tempo", m.group(0)))
        elif (m := _ITALIAN.search(sentence)) or (m := _SIMPLE.search(sentence)):
            facts.append(("tempo", m.group(1)))
        if m := _METER.search(sentence):
            facts.append(("meter", m.group(0)))
        for word in parse_answer("instruments", _NOT_INSTRUMENTS.sub("-", sentence)) or []:
            if word not in seen_instruments:
                seen_instruments.add(word)
                facts.append(("instruments", word))
        if (texture := parse_answer("texture", sentence)) is not None:
            facts.append(("texture", texture))
        loudness = _PIANO_INSTRUMENT.sub("instrument", sentence)
        if (level := parse_answer("dynamics", loudness)) is not None:
            facts.append(("dynamics", level))
    return facts


def fact_is_correct(qtype: str, statement: str, analysis: dict[str, Any]) -> bool:
    """Whether one stated fact agrees with the analysis (`answer_is_correct`; one instrument: the piece has it)."""
    from midilm.annotate.captions import instrument_words
    from midilm.annotate.questions import answer_is_correct, parse_answer

    if qtype == "instruments":
        # answer_is_correct asks for half of the piece's instruments; one named instrument is right when the
        # piece has it, both sides read through the same General MIDI lookup
        truth = parse_answer("instruments", ", ".join(instrument_words(analysis))) or []
        return statement in truth
    return answer_is_correct(qtype, statement, analysis)


def caption_precision(caption: str, analysis: dict[str, Any]) -> dict[str, Any]:
    """{"words", "facts": [{"type", "stated", "correct"}], "n_facts", "n_correct", "precision" (None if no facts)}."""
    facts = [{"type": t, "stated": s, "correct": fact_is_correct(t, s, analysis)} for t, s in caption_facts(caption)]
    n_correct = sum(f["correct"] for f in facts)
    return {"words": word_count(caption), "facts": facts, "n_facts": len(facts), "n_correct": n_correct,
            "precision": n_correct / len(facts) if facts else None}


def summarise_precision(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Totals over `caption_precision` results: micro precision (right facts / stated facts), the mean of the
    captions' own precisions, per-type precision, facts and words per caption, share of captions of at
    least MIN_WORDS words."""
    if not items:
        return {"captions": 0, "precision": None}
    stated = sum(i["n_facts"] for i in items)
    right = sum(i["n_correct"] for i in items)
    per_caption = [i["precision"] for i in items if i["precision"] is not None]
    by_type: dict[str, list[bool]] = defaultdict(list)
    for i in items:
        for f in i["facts"]:
            by_type[f["type"]].append(f["correct"])
    words = [i["words"] for i in items]
    return {
        "captions": len(items),
        "precision": right / stated if stated else None,
        "precision_mean_per_caption": statistics.fmean(per_caption) if per_caption else None,
        "captions_without_facts": len(items) - len(per_caption),
        "facts_per_caption": stated / len(items),
        "words_mean": statistics.fmean(words),
        "words_median": statistics.median(words),
        f"share_at_least_{MIN_WORDS}_words": sum(w >= MIN_WORDS for w in words) / len(words),
        "by_type": {t: {"precision": statistics.fmean(by_type[t]), "n": len(by_type[t])}
                    for t in FACT_TYPES if by_type.get(t)},
    }
