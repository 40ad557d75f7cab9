"""The sampling rules every backend shares: settings, the next-token filter and draw, one sequence's grammar.

`MusicSequence` is one sample being written: what may come next (a block of ids, a note mask, or one
forced id), and the id chosen. The loop that steps a batch of such rows over a model lives in
`generate/engine.py`; vLLM applies the same `MusicSequence` rules from its logits processor
(`backends/vllm.py`).

The grammar: only music ids, the slot order, non-decreasing time, the instrument allow-list, at most 15
melodic instruments, a cap on notes per onset. Anticipated controls (a melody to accompany) are forced
into the sequence 5 s ahead of their time, as AMT was trained. A sequence stops at `max_new_tokens`,
at the end of its window, or when the grammar has nothing left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from midilm.codecs.amt.vocab import ATIME_OFFSET, CONTROL_OFFSET, DELTA, MAX_TIME, NOTE_OFFSET, REST, SEPARATOR
from midilm.generate.grammar import NOTE, TIME, AmtGrammar, GrammarConfig


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    top_p: float = 0.98
    top_k: int = 0
    max_new_tokens: int = 2046
    seconds: float | None = None
    n: int = 1
    seed: int | None = None
    constrained: bool = True  # False: any music id may follow any other (MIDI-LLM's own sampling)

    def validate(self) -> None:
        if not 0.0 < self.temperature <= 10.0:
            raise ValueError(f"temperature must be in (0, 10], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 1 <= self.max_new_tokens <= 1_000_000:
            raise ValueError(f"max_new_tokens must be 1..1000000, got {self.max_new_tokens}")
        if self.seconds is not None and not 0 < self.seconds <= 3600:
            raise ValueError(f"seconds must be in (0, 3600], got {self.seconds}")
        if not 1 <= self.n <= 64:
            raise ValueError(f"n must be 1..64, got {self.n}")


@dataclass
class SampleResult:
    tokens: list[list[int]]  # AMT ids per sample (events and folded-in controls), without the flag
    steps: int = 0
    stop_reasons: list[str] = field(default_factory=list)


def _kept_weights(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """(scaled logits, unnormalised probabilities with the entries top-k and top-p drop set to 0)."""
    x = np.asarray(logits, dtype=np.float64) / temperature
    if 0 < top_k < x.size:
        kth = np.partition(x, x.size - top_k)[x.size - top_k]
        x = np.where(x < kth, -np.inf, x)
    w = np.exp(x - x.max())
    if top_p < 1.0:
        total = w.sum()
        # entries under eps cannot be in the nucleus: all of them together hold less than 1 - top_p, so the
        # mass before the first of them already reaches top_p. Sorting only the rest is exact, and fast.
        v = np.sort(w[w >= (1.0 - top_p) / x.size * total])[::-1]
        before = np.cumsum(v) - v
        # keep tokens while the mass before them is under top_p; the best token always stays
        cut = v[int(np.searchsorted(before, top_p * total, side="left")) - 1]
        w[w < cut] = 0.0
    return x, w


def filter_logits(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """Temperature, then top-k, then nucleus filtering of a 1-D array of logits; dropped entries become -inf."""
    x, w = _kept_weights(logits, temperature, top_k, top_p)
    return x if top_p >= 1.0 else np.where(w > 0, x, -np.inf)


def window_grammar(grammar: GrammarConfig | None, seconds: float | None) -> GrammarConfig:
    """The grammar with its last onset moved in to `seconds` of music, when a length is asked for."""
    grammar = grammar or GrammarConfig()
    if seconds is None:
        return grammar
    return replace(grammar, max_time=min(MAX_TIME - 1, int(seconds * 100) - 1))


# --- one sequence's rules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """What may come next, in AMT ids: [lo, hi), further narrowed by `mask` (note slot), or one forced id."""

    lo: int
    hi: int
    mask: np.ndarray | None = None
    forced: bool = False


class MusicSequence:
    """One sample being written: its grammar state, the controls still to force in, and its ids so far.

    `choice()` says what may come next (None once the sequence is finished: see `reason`); `accept(id)`
    records the id that was chosen. Both take and give AMT ids; backends add the vocabulary offset.
    """

    def __init__(self, grammar: GrammarConfig, constrained: bool = True, context: Sequence[int] = (),
                 controls: Sequence[int] = (), max_new_tokens: int = 2046, until: int | None = None):
        """`until`: the sequence ends once an event at or after this tick is written (a window that another
        window will follow stops before its clock runs into the end of the 100 s sequence)."""
        self.grammar, self.context, self.controls = grammar, [int(t) for t in context], [int(t) for t in controls]
        self.state = AmtGrammar(grammar)
        for tok in self.context:  # the given part of the piece: its clock and notes, without the rules
            self.state.follow(tok)
        self.constrained = constrained
        self.max_new_tokens = max_new_tokens
        self.until = until
        self.pending = _controls_by_time(controls)
        self.queue: list[int] = []  # a control triplet being forced in
        self.tokens: list[int] = []
        self.done = False
        self.reason = ""

    def choice(self) -> Choice | None:
        if self.done:
            return None
        st = self.state
        if st.slot == TIME and self.pending and not self.queue and st.time >= self.pending[0][0] - DELTA:
            self.queue = list(self.pending.pop(0)[1])
        if self.queue:
            return Choice(self.queue[0], self.queue[0] + 1, forced=True)
        if not self.constrained:
            # MIDI-LLM's only constraint: any music id (events, controls, separator), no grammar
            return Choice(0, SEPARATOR + 1)
        if not st.can_continue():
            self.done, self.reason = True, "window full"
            return None
        if st.slot == NOTE:
            return Choice(NOTE_OFFSET, REST, st.allowed_notes())
        lo, hi = st.allowed_range()
        if self._may_end(st):
            # near the end of a length-limited piece the model may also pick a time past it, which ends the
            # piece: cut off at the end, the onsets it would have moved on to had their mass handed to the
            # current one, and pieces ended on a stack of up to 16 notes in their last half second
            hi = max(hi, min(st.time + self._gap, MAX_TIME - 1) + 1)
        return Choice(lo, hi)

    def _may_end(self, st: AmtGrammar) -> bool:
        return st.slot == TIME and self.grammar.max_time < MAX_TIME - 1 and st.time + self._gap > self.grammar.max_time

    @property
    def _gap(self) -> int:
        return self.grammar.max_gap if self.grammar.max_gap is not None else DELTA

    def accept(self, amt: int) -> None:
        if self.done:
            raise ValueError("the sequence is finished")
        if self.queue:
            if amt != self.queue[0]:
                raise ValueError(f"id {amt} given where the control id {self.queue[0]} is forced")
            self.queue.pop(0)
        if not self.constrained:
            self.state.follow(amt)
        elif self._may_end(self.state) and self.grammar.max_time < amt <= min(self.state.time + self._gap,
                                                                              MAX_TIME - 1):
            self.finish("end")  # a time past the end: the piece ends before it (see `choice`)
            return
        elif amt < CONTROL_OFFSET:  # forced controls are outside the grammar
            self.state.advance(amt)
        self.tokens.append(amt)
        if len(self.tokens) >= self.max_new_tokens:
            self.finish("max tokens")
        elif self.until is not None and len(self.tokens) % 3 == 0 and amt < CONTROL_OFFSET \
                and self.state.time >= self.until:
            self.finish("window end")

    def finish(self, reason: str) -> None:
        if not self.done:
            self.done, self.reason = True, reason

    @property
    def forced_controls(self) -> int:
        """Control triplets forced in so far (whole ones)."""
        return sum(1 for t in self.tokens[0::3] if t >= CONTROL_OFFSET)


def draw(row: np.ndarray, base: int, sampling: SamplingConfig, rng: np.random.Generator) -> int:
    """Draw one id from a 1-D slice of logits whose first entry is id `base` (inverse CDF: one uniform)."""
    cdf = np.cumsum(_kept_weights(row, sampling.temperature, sampling.top_k, sampling.top_p)[1])
    return base + int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))


def row_seeds(seed: int | None, n: int) -> tuple[int, list[int]]:
    """(the request's seed, one seed per sample). Sample k's generator depends only on (seed, k), so a
    sample gets the same tokens alone, beside the other samples of its request or batched with other
    requests. Without a seed one is drawn, and reported, so that any output can be reproduced."""
    import secrets

    base = secrets.randbits(31) if seed is None else int(seed)
    return base, [int(np.random.SeedSequence([base, k]).generate_state(1, np.uint64)[0] >> 1) for k in range(n)]


def _controls_by_time(controls: Sequence[int]) -> list[tuple[int, list[int]]]:
    trip = [list(controls[i : i + 3]) for i in range(0, len(controls) - len(controls) % 3, 3)]
    return sorted(((t[0] - ATIME_OFFSET, t) for t in trip), key=lambda x: x[0])


def trim_partial(tokens: list[int]) -> list[int]:
    """Drop a trailing incomplete event so the output is whole triplets (controls count as events)."""
    return tokens[: len(tokens) - len(tokens) % 3]


def sample_music(*args, **kwargs) -> SampleResult:
    """`engine.sample_music` (the loop lives in `generate/engine.py`; this name is kept for callers)."""
    from midilm.generate.engine import sample_music as run

    return run(*args, **kwargs)


def music_seconds(tokens: Sequence[int]) -> float:
    """Seconds of music in AMT events (last onset plus its duration)."""
    arr = np.asarray(tokens[: len(tokens) - len(tokens) % 3], dtype=np.int64).reshape(-1, 3)
    if not len(arr):
        return 0.0
    times = np.where(arr[:, 0] >= CONTROL_OFFSET, arr[:, 0] - CONTROL_OFFSET, arr[:, 0])
    durs = np.where(arr[:, 1] >= CONTROL_OFFSET, arr[:, 1] - CONTROL_OFFSET, arr[:, 1]) - 10000
    return float((times + durs).max()) / 100.0
