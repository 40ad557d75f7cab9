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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

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
    begun a name."""

    def __init__(self, paths: Sequence[NamePath], probs: torch.Tensor, strength: float, gate: float,
                 ambiguous: frozenset[int] = frozenset(), exclusive: bool = False, hard: bool = False,
                 lm_weight: float = 1.0, force_gate: float = 0.01, max_named: int = 0):
        self.paths, self.probs, self.strength, self.gate = list(paths), probs.float(), strength, gate
        self.ambiguous, self.exclusive, self.hard = ambiguous, exclusive, hard
        # the mix is p_LM ** lm_weight * p_class ** strength: below 1, a confident LM yields sooner to a classifier
        # that is more often right than it (the genre's)
        self.lm_weight, self.force_gate = lm_weight, force_gate
        self.max_named = max_named  # with `exclusive`: no more names once this many were written (0: no limit)
        self._named: dict[int, tuple[int, set[int]]] = {}  # row -> (tokens seen, classes named so far)
        # per step only the paths whose first token was just written (or whose trigger just ended) are looked at
        self._by_first: dict[int, list[NamePath]] = {}
        self._longest = max((len(p.tokens) for p in self.paths), default=0)
        self._by_start: dict[tuple, list[NamePath]] = {}
        self._by_last: dict[int, list[NamePath]] = {}
        for path in self.paths:
            self._by_first.setdefault(path.tokens[0], []).append(path)
            self._by_start.setdefault((path.after, path.at), []).append(path)
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

    def candidates(self, generated: list[int], row: int) -> tuple[dict[int, float], bool, bool]:
        """Next tokens that continue a name here, each with the probability of the classes it leads to (given
        what was already written of the name), whether a name is already begun (else they would start one;
        an ambiguous token at the start counts as not begun), and whether a name is due here (`NamePath.force`)."""
        classes: dict[int, set[int]] = {}
        inside = force = False
        n = len(generated)
        def add(path: NamePath, done: int) -> None:
            nonlocal inside, force
            classes.setdefault(path.tokens[done], set()).update(path.classes)
            inside = inside or (done > 0 and path.tokens[0] not in self.ambiguous)
            force = force or (done == 0 and path.force)

        for group in self._by_start.values():  # a name may start here
            if self._begins(group[0], generated, n):
                for path in group:
                    add(path, 0)
        for done in range(1, min(n, self._longest) + 1):  # or continue one begun `done` tokens ago
            start = n - done
            written = tuple(generated[start:])
            for path in self._by_first.get(generated[start], ()):
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

    @staticmethod
    def _put(out: torch.Tensor, b: int, row: torch.Tensor) -> None:
        """Write a row's new scores, unless they rule out every token (a list another processor forces onto a
        name this one rules out): then that processor's scores stand."""
        if bool(torch.isfinite(row).any()):
            out[b] = row.to(out.dtype)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = scores.clone()
        for b in range(scores.shape[0]):
            cands, inside, force = self.candidates(input_ids[b].tolist(), b)
            if not cands:
                continue
            toks = torch.tensor(list(cands), device=scores.device)
            mass = torch.tensor(list(cands.values()), device=scores.device)
            lm = scores[b].float().log_softmax(-1)
            sure = [t for t in cands if t not in self.ambiguous]
            if force and float(lm[toks].exp().sum()) >= self.force_gate:
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
    text ends with one of `triggers` (" for" in "A pop piece for piano") and the LM gives the tokens that may
    start the list (`starts`) at least `gate` of its probability, the row's tokens in `spans` are written one by
    one, whatever the LM would have written; then the LM goes on, but not with one of `closed` (" and": the list
    is complete). A row with an empty span is left alone."""

    def __init__(self, triggers: Sequence[tuple[int, ...]], spans: Sequence[tuple[int, ...]], starts: frozenset[int],
                 gate: float, closed: frozenset[int] = frozenset()):
        self.triggers, self.spans, self.starts, self.gate = [t for t in triggers if t], list(spans), starts, gate
        self._starts = torch.tensor(sorted(starts), dtype=torch.long)
        self._closed = torch.tensor(sorted(closed), dtype=torch.long)

    def due(self, generated: list[int], row: int, lm: torch.Tensor | None) -> int | None:
        """The token to write next in this row, -1 where the list was just written in full, else None (no list
        begun here)."""
        span, n = self.spans[row], len(generated)
        for done in range(len(span) + 1):
            if done and tuple(generated[n - done :]) != span[:done]:
                continue
            start = n - done
            if not any(0 < len(t) <= start and tuple(generated[start - len(t) : start]) == t for t in self.triggers):
                continue
            if done == len(span):
                return -1
            if done or (lm is not None and float(lm[self._starts.to(lm.device)].exp().sum()) >= self.gate):
                return span[done]
        return None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = scores
        for b in range(scores.shape[0]):
            if not self.spans[b]:
                continue
            token = self.due(input_ids[b].tolist(), b, scores[b].float().log_softmax(-1))
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
