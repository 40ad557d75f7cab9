"""Guided decoding of names: where an LM is about to name a key, a genre or an instrument, a classifier of the
notes (or what the notes plainly contain) decides which.

`NameGuide` is a logits processor for `generate`. Each `NamePath` is one way of writing a name in the model's
answers (its tokens, the classes it names, and where it may begin: after a trigger such as " in", or where the
answer so far is exactly some prefix, such as "A" at a caption's start). Per row, the guide holds a probability
for every class (the key classifier's 24-way distribution, the genre classifier's, or 0/1 for the instruments
the MIDI programs contain). Where the LM puts at least `gate` of its probability on tokens that continue a name,
that share is dealt out again in proportion to p_LM(token) * p_class(token) ** strength, p_class(token) being
the probability of the classes that token leads to given what was already written of the name: the LM decides
*whether* a name is written, the classifier *which*. A name begun after its trigger is finished as one.

Options serve instrument names: `exclusive` (a class once named is not named again: "drums, drums"; and with
`max_named`, no more than that many) and `hard` (tokens that lead only to classes of probability 0 are removed
even where the gate is not met: an instrument the piece does not contain is never named). `ListGuide` writes a
list that the notes determine outright (the caption's instruments, most notes first) where the LM begins it.

A question can say which name its answer is (`question_kind`: "Which instruments are playing?", "What genre is
this?"). Paths marked `asked` apply only in rows whose question asks for their kind, and there one of them is due at
the answer's start, however little the LM wants it, unless the LM's first choice begins a sentence of its own
(`openers`: "The piece is played by ...", whose names the other paths guide); the short answer then ends after the
name (`end`: "Classical."). So a short answer is the classifier's name, not whatever the LM would name ("C minor"
for the instruments of a string quartet).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from midilm.annotate.questions import question_type

DOMINANT = 0.5  # an ambiguous start token the LM gives this much probability is taken as another word


@dataclass(frozen=True)
class NamePath:
    tokens: tuple[int, ...]
    classes: tuple[int, ...]
    after: tuple[tuple[int, ...], ...] = ()  # it may begin after any of these token sequences
    at: tuple[tuple[int, ...], ...] = ()  # or where the answer so far is exactly one of these (() = its start)
    # where it may begin, a name must be written as soon as the LM gives names `force_gate` of its probability
    # (the caption's opening phrase after "A", the instrument list after "for": a name is due there)
    force: bool = False
    # only in rows whose question asks for this kind of name (`question_kind`); there it is due at the answer's
    # start whatever the LM's probability, unless the LM begins a sentence with one of the guide's `openers`
    asked: str = ""


NAME_KINDS = ("mode", "key", "instruments", "genre")  # the question types whose answer is one name or one list
# questions that name a kind but do not ask for one name of it (a key change, how many instruments, which plays the
# melody): no name is due
_NOT_ONE_NAME = r"key changes?|change (of )?key|modulat|how many|melody|\blead\b|solo|loudest|most notes|drum"
# wordings of a kind beyond what the dataset's classifier (`question_type`) reads as it; the key is read here alone,
# because the classifier also takes "tonal centres" for it
_WORDINGS = {
    "mode": r"\bminor or (a )?major\b",
    "key": r"\bkey\b|\btonal cent(re|er)\b|\btonic\b",
    "instruments": r"\b(what|who)('s| is| are) playing\b|\bplays? (in )?this\b",
    "genre": r"\b(kind|type|sort) of music\b",
}
_CLASSIFIED = ("mode", "instruments", "genre")  # the kinds `question_type` is asked about


def question_kind(question: str | None) -> str:
    """The kind of name a question asks for, "" where none or no question: the first of `NAME_KINDS` that is its
    `question_type` (among `_CLASSIFIED`) or that it asks for in the words of `_WORDINGS`."""
    text = (question or "").lower()
    if re.search(_NOT_ONE_NAME, text):
        return ""
    asked = question_type(question or "", _CLASSIFIED)
    return next((kind for kind in NAME_KINDS if kind == asked or re.search(_WORDINGS[kind], text)), "")


def token_ids(tokenizer, text: str) -> tuple[int, ...]:
    return tuple(tokenizer(text, add_special_tokens=False).input_ids)


def single_tokens(tokenizer, words: Iterable[str]) -> frozenset[int]:
    """The ids of those words that are one token each (for `NameGuide.ambiguous`)."""
    ids = (token_ids(tokenizer, w) for w in words)
    return frozenset(t[0] for t in ids if len(t) == 1)


class NameGuide:
    """A logits processor: see the module docstring. `probs` is [B, classes]; `ambiguous` holds tokens that may
    also start another word (the A of "A pop piece" against "A minor"): where one of them takes at least
    `DOMINANT` of the LM's probability it is taken as that other word, and writing it does not count as having
    begun a name. `asked` holds each row's `question_kind` (for the `NamePath.asked` paths); where the LM's most
    likely token is one of `openers` (sentence starts: "The", "It"), no name is forced on it; after an asked name
    the tokens of `end` follow (a full stop and EOS)."""

    def __init__(self, paths: Sequence[NamePath], probs: torch.Tensor, strength: float, gate: float,
                 ambiguous: frozenset[int] = frozenset(), exclusive: bool = False, hard: bool = False,
                 lm_weight: float = 1.0, force_gate: float = 0.01, max_named: int = 0,
                 asked: Sequence[str] = (), openers: frozenset[int] = frozenset(), end: tuple[int, ...] = ()):
        self.paths, self.probs, self.strength, self.gate = list(paths), probs.float(), strength, gate
        self.ambiguous, self.exclusive, self.hard = ambiguous, exclusive, hard
        # the mix is p_LM ** lm_weight * p_class ** strength: below 1, a confident LM yields sooner to a classifier
        # that is more often right than it (the genre's)
        self.lm_weight, self.force_gate = lm_weight, force_gate
        self.max_named = max_named  # with `exclusive`: no more names once this many were written (0: no limit)
        self.asked, self.openers, self.end = list(asked), frozenset(openers), tuple(end)
        self._named: dict[int, tuple[int, set[int]]] = {}  # row -> (tokens seen, classes named so far)
        # per step only the paths whose first token was just written (or whose trigger just ended) are looked at
        self._by_first: dict[int, list[NamePath]] = {}
        self._longest = max((len(p.tokens) for p in self.paths), default=0)
        self._by_start: dict[tuple, list[NamePath]] = {}
        self._by_last: dict[int, list[NamePath]] = {}
        for path in self.paths:
            self._by_first.setdefault(path.tokens[0], []).append(path)
            self._by_start.setdefault((path.after, path.at, path.asked), []).append(path)
            self._by_last.setdefault(path.tokens[-1], []).append(path)

    @staticmethod
    def _begins(path: NamePath, generated: list[int], start: int) -> bool:
        """Whether the path may begin at `start` of the generated tokens (after a trigger, or at an exact prefix)."""
        return any(0 < len(a) <= start and tuple(generated[start - len(a) : start]) == a for a in path.after) \
            or any(len(a) == start and tuple(generated[:start]) == a for a in path.at)

    def named(self, generated: list[int], row: int) -> set[int]:
        """Classes whose name was written in full so far (kept per row, updated with the new tokens only)."""
        seen, out = self._named.get(row, (0, set()))
        if seen > len(generated):  # a new generation reuses the processor: start again
            seen, out = 0, set()
        for end in range(seen + 1, len(generated) + 1):
            for path in self._by_last.get(generated[end - 1], ()):
                start = end - len(path.tokens)
                # a name begun where one may begin: not the "guitar" of "electric guitar"
                if start >= 0 and tuple(generated[start:end]) == path.tokens and self._begins(path, generated, start):
                    out.update(path.classes)
        self._named[row] = (len(generated), out)
        return out

    def candidates(self, generated: list[int], row: int) -> tuple[dict[int, float], bool, bool | str]:
        """Next tokens that continue a name here, each with the probability of the classes it leads to (given
        what was already written of the name), whether a name is already begun (else they would start one;
        an ambiguous token at the start counts as not begun, unless the question asked for the name), and
        whether a name is due here: True (`NamePath.force`), "asked" (`NamePath.asked`) or False."""
        classes: dict[int, set[int]] = {}
        inside = False
        force: bool | str = False
        n = len(generated)
        asked = self.asked[row] if row < len(self.asked) else ""

        def add(path: NamePath, done: int) -> None:
            nonlocal inside, force
            classes.setdefault(path.tokens[done], set()).update(path.classes)
            inside = inside or (done > 0 and (path.tokens[0] not in self.ambiguous or bool(path.asked)))
            force = force or (done == 0 and path.force)

        starting = [g for g in self._by_start.values() if (not g[0].asked or g[0].asked == asked)
                    and self._begins(g[0], generated, n)]
        if any(g[0].asked for g in starting):  # the question's name is due here: only its paths start
            starting, force = [g for g in starting if g[0].asked], "asked"
        for group in starting:  # a name may start here
            for path in group:
                add(path, 0)
        for done in range(1, min(n, self._longest) + 1):  # or continue one begun `done` tokens ago
            start = n - done
            written = tuple(generated[start:])
            for path in self._by_first.get(generated[start], ()):
                if path.asked and path.asked != asked:
                    continue
                if done < len(path.tokens) and written == path.tokens[:done] and self._begins(path, generated, start):
                    add(path, done)
        p = self.probs[row]
        if self.exclusive:
            gone = self.named(generated, row)
            if self.max_named and len(gone) >= self.max_named:
                p = torch.zeros_like(p)
            elif gone:
                p = p.clone()
                p[list(gone)] = 0.0
        return {t: min(float(p[list(cs)].sum()), 1.0) for t, cs in classes.items()}, inside, force

    def names_one(self, lm: torch.Tensor, cands: list[int], sure: list[int]) -> bool:
        """Whether the LM (log-probabilities) is about to start a name: `gate` of its probability on tokens that
        can only start one, or on all that can with no single ambiguous one taking most of it."""
        p = lm.exp()
        if sure and float(p[sure].sum()) >= self.gate:
            return True
        unsure = [t for t in cands if t in self.ambiguous]
        return float(p[cands].sum()) >= self.gate and (not unsure or float(p[unsure].max()) < DOMINANT)

    def opening(self, lm: torch.Tensor) -> bool:
        """Whether the LM (log-probabilities) would begin a sentence of its own here (`openers`)."""
        return int(lm.argmax()) in self.openers

    def ending(self, generated: list[int], row: int) -> int | None:
        """The token of `end` due next where the answer so far is an asked name (and part of `end`), else None."""
        asked = self.asked[row] if row < len(self.asked) else ""
        if not (asked and self.end):
            return None
        for path in self._by_start.get(((), ((),), asked), ()):
            k = len(path.tokens)
            tail = tuple(generated[k:])
            if tuple(generated[:k]) == path.tokens and len(tail) < len(self.end) and self.end[: len(tail)] == tail:
                return self.end[len(tail)]
        return None

    @staticmethod
    def _put(out: torch.Tensor, b: int, row: torch.Tensor) -> None:
        """Write a row's new scores, unless they rule out every token (a list another processor forces onto a
        name this one rules out): then that processor's scores stand."""
        if bool(torch.isfinite(row).any()):
            out[b] = row.to(out.dtype)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = scores.clone()
        for b in range(scores.shape[0]):
            generated = input_ids[b].tolist()
            token = self.ending(generated, b)
            if token is not None:  # a short answer ends after its name
                out[b] = -torch.inf
                out[b, token] = 0.0
                continue
            cands, inside, force = self.candidates(generated, b)
            if not cands:
                continue
            toks = torch.tensor(list(cands), device=scores.device)
            mass = torch.tensor(list(cands.values()), device=scores.device)
            lm = scores[b].float().log_softmax(-1)
            sure = [t for t in cands if t not in self.ambiguous]
            if force == "asked":
                inside = inside or not self.opening(lm)  # the question asked for this name: only names here
            elif force and float(lm[toks].exp().sum()) >= self.force_gate:
                inside = True  # a name is due: only names here
            if inside:  # a name already begun after its trigger is finished as one: only its continuations
                only = torch.full_like(lm, -torch.inf)
                only[toks] = lm[toks]
                lm = only.log_softmax(-1)
            elif not self.names_one(lm, list(cands), sure):
                if self.hard:  # no name here, and none of what the notes do not hold either
                    drop = toks[(mass <= 0) & torch.tensor([t not in self.ambiguous for t in cands],
                                                           device=scores.device)]
                    if len(drop):
                        row = lm.clone()
                        row[drop] = -torch.inf
                        self._put(out, b, row.log_softmax(-1))
                continue
            share = lm[toks].logsumexp(0)
            row = lm.clone()  # log-probabilities, so that the candidates' new share is on the same scale
            if self.hard and float(mass.max()) <= 0:  # every name here is ruled out: the share goes elsewhere
                row[toks] = -torch.inf
                self._put(out, b, row.log_softmax(-1))
                continue
            log_mass = mass.clamp_min(1e-9).log()
            if self.hard:
                log_mass = torch.where(mass > 0, log_mass, -torch.inf)
            mixed = (self.lm_weight * lm[toks] + self.strength * log_mass).log_softmax(0)
            row[toks] = share + mixed
            self._put(out, b, row)
        return out


class ListGuide:
    """A logits processor that writes a list known from the notes where the LM begins it: where the generated
    text ends with one of `triggers` (" for" in "A pop piece for piano"; the empty trigger is the answer's start)
    and the LM gives the tokens that may start the list (`starts`) at least `gate` of its probability, and its
    most likely token is none of `openers` (sentence starts), the row's tokens in `spans` are written one by one,
    whatever the LM would have written; then the LM goes on, but not with one of `closed` (" and": the list is
    complete). A row with an empty span is left alone."""

    def __init__(self, triggers: Sequence[tuple[int, ...]], spans: Sequence[tuple[int, ...]], starts: frozenset[int],
                 gate: float, closed: frozenset[int] = frozenset(), openers: frozenset[int] = frozenset()):
        self.triggers, self.spans, self.starts, self.gate = list(triggers), list(spans), starts, gate
        self._starts = torch.tensor(sorted(starts), dtype=torch.long)
        self._closed = torch.tensor(sorted(closed), dtype=torch.long)
        self.openers = frozenset(openers)

    def due(self, generated: list[int], row: int, scores: torch.Tensor | None) -> int | None:
        """The token to write next in this row, -1 where the list was just written in full, else None (no list
        begun here). `scores` (the row's logits) are normalised only where a list may begin: most steps need
        no pass over the vocabulary."""
        span, n = self.spans[row], len(generated)
        for done in range(len(span) + 1):
            if done and tuple(generated[n - done :]) != span[:done]:
                continue
            start = n - done
            if not any((not t and start == 0) or (0 < len(t) <= start and tuple(generated[start - len(t) : start]) == t)
                       for t in self.triggers):
                continue
            if done == len(span):
                return -1
            if done or (scores is not None and self.begins(scores.float().log_softmax(-1))):
                return span[done]
        return None

    def begins(self, lm: torch.Tensor) -> bool:
        """Whether the LM (log-probabilities) begins the list here rather than a sentence of its own."""
        if int(lm.argmax()) in self.openers:
            return False
        return float(lm[self._starts.to(lm.device)].exp().sum()) >= self.gate

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = scores
        for b in range(scores.shape[0]):
            if not self.spans[b]:
                continue
            token = self.due(input_ids[b].tolist(), b, scores[b])
            if token is None or (token < 0 and not len(self._closed)):
                continue
            if out is scores:
                out = scores.clone()
            if token < 0:
                out[b, self._closed.to(out.device)] = -torch.inf
            else:
                out[b] = -torch.inf
                out[b, token] = 0.0
        return out
