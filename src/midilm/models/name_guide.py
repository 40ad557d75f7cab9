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

Two options serve the instrument list: `exclusive` (a class once named is not named again: "drums, drums")
and `hard` (tokens that lead only to classes of probability 0 are removed even where the gate is not met: an
instrument the piece does not contain is never named).
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
                 lm_weight: float = 1.0, force_gate: float = 0.01):
        self.paths, self.probs, self.strength, self.gate = list(paths), probs.float(), strength, gate
        self.ambiguous, self.exclusive, self.hard = ambiguous, exclusive, hard
        # the mix is p_LM ** lm_weight * p_class ** strength: below 1, a confident LM yields sooner to a classifier
        # that is more often right than it (the genre's)
        self.lm_weight, self.force_gate = lm_weight, force_gate
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

    def named(self, generated: list[int], row: int) -> set[int]:
        """Classes whose name was written in full so far (kept per row, updated with the new tokens only)."""
        seen, out = self._named.get(row, (0, set()))
        if seen > len(generated):  # a new generation reuses the processor: start again
            seen, out = 0, set()
        for end in range(seen + 1, len(generated) + 1):
            for path in self._by_last.get(generated[end - 1], ()):
                n = len(path.tokens)
                if n <= end and tuple(generated[end - n : end]) == path.tokens:
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

        def begins_at(path: NamePath, start: int) -> bool:
            return any(0 < len(a) <= start and tuple(generated[start - len(a) : start]) == a for a in path.after) \
                or any(len(a) == start and tuple(generated[:start]) == a for a in path.at)

        def add(path: NamePath, done: int) -> None:
            nonlocal inside, force
            classes.setdefault(path.tokens[done], set()).update(path.classes)
            inside = inside or (done > 0 and path.tokens[0] not in self.ambiguous)
            force = force or (done == 0 and path.force)

        for group in self._by_start.values():  # a name may start here
            if begins_at(group[0], n):
                for path in group:
                    add(path, 0)
        for done in range(1, min(n, self._longest) + 1):  # or continue one begun `done` tokens ago
            start = n - done
            written = tuple(generated[start:])
            for path in self._by_first.get(generated[start], ()):
                if done < len(path.tokens) and written == path.tokens[:done] and begins_at(path, start):
                    add(path, done)
        p = self.probs[row]
        if self.exclusive:
            gone = self.named(generated, row)
            if gone:
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
                        out[b] = row.log_softmax(-1).to(out.dtype)
                continue
            share = lm[toks].logsumexp(0)
            row = lm.clone()  # log-probabilities, so that the candidates' new share is on the same scale
            if self.hard and float(mass.max()) <= 0:  # every name here is ruled out: the share goes elsewhere
                row[toks] = -torch.inf
                out[b] = row.log_softmax(-1).to(out.dtype)
                continue
            log_mass = mass.clamp_min(1e-9).log()
            if self.hard:
                log_mass = torch.where(mass > 0, log_mass, -torch.inf)
            mixed = (self.lm_weight * lm[toks] + self.strength * log_mass).log_softmax(0)
            row[toks] = share + mixed
            out[b] = row.to(out.dtype)
        return out
