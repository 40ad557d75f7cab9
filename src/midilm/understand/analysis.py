"""The analysis answerer: captions and answers about a piece read off `midilm.annotate.analyze` of its notes.

It is the understanding "model" behind `midilm describe/ask --model analysis` (accurate facts today) and
the ceiling the evaluation compares trained models with (`midilm eval understand --model analysis`). It
has the understanding models' interface (`describe`, `ask` and their `*_many` forms) and knows no
metadata (title, composer, genre) that is not in the notes.

Questions are classified into the dataset's question types (`annotate.questions.question_type`: its
paraphrase tables, then keywords) and answered through the dataset's own answer templates, so an answer
is right exactly as often as the analysis is. Captions come in two kinds: `caption="dataset"` draws one
of the dataset's caption templates (what the evaluation's text metrics compare with), `caption="summary"`
writes a fixed 2-4 sentence summary that always states key, tempo, meter, instruments, texture and
dynamics (what a user asked for).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from midilm.annotate.questions import LONG_FORM_PREFIXES, question_type

CAPTION_TYPE = "caption"
UNKNOWN = "I cannot tell that from the notes alone."
CAPTION_KINDS = ("dataset", "summary")
MAX_INSTRUMENTS = 8  # a summary names this many at most (the rest are counted)


def long_form(question: str) -> bool:
    """Whether the question asks for a long answer (the dataset's long-style prefixes)."""
    return question.startswith(LONG_FORM_PREFIXES)


def summary_caption(analysis: dict[str, Any]) -> str:
    """Two to four sentences stating the analysis's key, tempo, meter, instruments, texture and dynamics,
    then (where the analysis has them) its harmony, key changes, range and density. Only facts of the dict."""
    from midilm.annotate import captions as c

    if not analysis or not analysis.get("n_notes", 1):
        return "An empty piece with no notes."
    words = c.instrument_words(analysis)
    head = "A piece"
    if words:
        shown = words if len(words) <= MAX_INSTRUMENTS else [*words[: MAX_INSTRUMENTS - 1],
                                                             f"{len(words) - MAX_INSTRUMENTS + 1} more instruments"]
        head += " for " + c.join_list(shown)
    facts = []
    key = c.get(analysis, "key")
    if key is not None:
        confidence = c.get(analysis, "key_confidence")
        facts.append(("probably " if confidence is not None and float(confidence) < 0.6 else "") + f"in {key}")
    meter, bpm = c.get(analysis, "time_signature"), c.bpm_value(analysis)
    word = c.get(analysis, "tempo_word") or c.tempo_simple(analysis)
    tempo = f"at about {bpm} bpm" if bpm is not None else ""
    if word:
        tempo = f"{tempo} ({str(word).lower()})" if tempo else f"at a {str(word).lower()} tempo"
    if meter is not None:
        facts.append(f"in {meter} time {tempo}".strip())
    elif tempo:
        facts.append(tempo)
    if c.present(analysis, "duration"):
        facts.append(f"lasting {c.format_duration(float(analysis['duration']))}")
    sentences = [head + (", " + ", ".join(facts) if facts else "") + "."]

    texture, dynamics = c.get(analysis, "texture"), c.get(analysis, "dynamics")
    parts = []
    if texture is not None:
        phrase = c.TEXTURE_PHRASES.get(str(texture), ("",))[0]
        parts.append(f"its texture is {texture}" + (f" ({phrase})" if phrase else ""))
    if dynamics is not None:
        level = c.DYNAMICS_WORDS.get(str(dynamics), (str(dynamics),))[0]
        parts.append(f"its dynamics are {level} ({dynamics}) on the whole")
    if parts:
        sentences.append(c.cap(" and ".join(parts)) + ".")

    harmony = []
    pattern = c.chord_pattern_symbols(analysis)
    if pattern and int(analysis.get("chord_pattern_count") or 0) > 1:
        harmony.append(f"a recurring progression {' - '.join(pattern)} runs through it")
    elif chords := c.common_chords(analysis):
        harmony.append(f"its main chords are {c.join_list(chords)}")
    changes = [s for s in analysis.get("key_segments") or [] if s.get("key")][1:]  # the first is the start
    if key is not None and changes:
        moves = [f"{s['key']} at {_clock(float(s.get('start', 0.0)))}" for s in changes[:3]]
        harmony.append(f"the key moves to {c.join_list(moves)}" + (" and later elsewhere" if len(changes) > 3 else ""))
    if harmony:
        sentences.append(c.cap(", and ".join(harmony)) + ".")

    low, high, density = c.get(analysis, "pitch_low"), c.get(analysis, "pitch_high"), c.get(analysis, "note_density")
    if low is not None and high is not None:
        span = f"The notes span {low} to {high}"
        sentences.append(span + (f", about {float(density):.0f} a second." if density is not None else "."))
    return " ".join(sentences[:4])


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}:{rest:02d}"


class AnalysisAnswerer:
    """Answers from `analyze_piece` of the notes given (see the module docstring). Seeded: the wording of
    an answer is drawn from the dataset's templates with a generator seeded per question."""

    name = "analysis"

    def __init__(self, seed: int = 0, caption: str = "dataset"):
        if caption not in CAPTION_KINDS:
            raise ValueError(f"caption must be one of {', '.join(CAPTION_KINDS)}, got {caption!r}")
        self.seed = seed
        self.caption = caption
        self._cache: dict[int, tuple[object, dict]] = {}

    def _analysis(self, piece) -> dict:
        from midilm.annotate.analyze import analyze_piece

        hit = self._cache.get(id(piece))
        if hit is None or hit[0] is not piece:
            if len(self._cache) > 64:
                self._cache.clear()
            hit = (piece, analyze_piece(piece) if len(piece) else {})
            self._cache[id(piece)] = hit
        return hit[1]

    def _rng(self, text: str) -> random.Random:
        return random.Random(f"{self.seed}:{text}")

    def describe(self, piece) -> str:
        from midilm.annotate.captions import make_caption

        analysis = self._analysis(piece)
        if not analysis:
            return "An empty piece with no notes."
        if self.caption == "summary":
            return summary_caption(analysis)
        return make_caption(analysis, self._rng("describe"), "medium")

    def ask(self, piece, question: str, history: Sequence | None = None) -> str:
        from midilm.annotate.questions import make_questions

        qtype = question_type(question)
        if qtype == CAPTION_TYPE:
            return self.describe(piece)
        analysis = self._analysis(piece)
        if qtype is None or not analysis:
            return UNKNOWN
        style = "long" if long_form(question) else "short"
        items = make_questions(analysis, self._rng(question), types=(qtype,), styles=(style,))
        return items[0]["answer"] if items else UNKNOWN

    def describe_many(self, pieces: Sequence) -> list[str]:
        return [self.describe(p) for p in pieces]

    def ask_many(self, pieces: Sequence, questions: Sequence[str]) -> list[str]:
        return [self.ask(p, q) for p, q in zip(pieces, questions)]
