"""The one sampling loop: a batch of rows, each with its own prompt, grammar state, settings and generator.

Every entry point (`midilm generate`, the Python API, the server's batches, long pieces, continuation,
accompaniment) builds `Row`s and hands them to `run_rows`, which steps them together over a `Decoder`:

    decoder.start(prompts, max_new_tokens)   run each row's prompt (they may differ in length)
    decoder.logits(i, lo, hi)                row i's next-token logits for the ids [lo, hi)
    decoder.feed(ids)                        append one id per row (None: the row is finished)

Per step, each live row asks its `MusicSequence` what may come next: a forced id (an anticipated
control) is taken as is; otherwise only the allowed block's logits are computed, the note mask applied,
the row's logits processors called, and one id drawn with the row's own generator. A row's tokens
depend only on its prompt, settings and seed, never on the rows it shares the batch with (up to the
float rounding of a batched forward pass).

The steering hook: `Row.processors` is a list of callables `processor(row, choice, logits) -> logits`,
called in order before each draw with the row (`seq.state` is its grammar state: clock, slot, sounding
notes; `seq.tokens` its AMT ids so far; `offset` the absolute tick of its window's time 0), the `Choice`
(AMT ids [choice.lo, choice.hi)) and the float64 logits of that block (disallowed ids already -inf); each
returns logits of the same shape. Rows with an `uncond_prompt` get a second decoder row that is fed the
same ids: its logits for the same block are in `row.uncond_logits` when the processors run
(classifier-free guidance; see `guidance`).

vLLM runs its own loop: `run_rows` hands it the rows as requests, and its logits processor applies the
same `MusicSequence` rules (`backends/vllm.py`). Steering crosses to its workers as settings (each row's
processor carries its `SteeringConfig`) and is rebuilt there; any other processor, and classifier-free guidance
(an unconditioned row), is refused with an error rather than dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from midilm.generate.grammar import GrammarConfig
from midilm.generate.sampler import (
    Choice,
    MusicSequence,
    SampleResult,
    SamplingConfig,
    draw,
    row_seeds,
    trim_partial,
    window_grammar,
)

LogitsProcessor = Callable[["Row", Choice, np.ndarray], np.ndarray]


class Decoder(Protocol):
    """What the loop needs from a backend: next-token logits for a batch of rows with their own prompts."""

    def start(self, prompts: list[list[int]], max_new_tokens: int) -> None:
        """Run each row's prompt (ids of the full vocabulary); rows may differ in length."""

    def feed(self, ids: list[int | None]) -> None:
        """Append one id to each row; None for a finished row (a backend may skip it)."""

    def logits(self, i: int, lo: int, hi: int) -> np.ndarray:
        """Float32 logits of row i's next token for the ids [lo, hi) of the full vocabulary."""


@dataclass(eq=False)
class Row:
    """One sample to write: its prompt (ending with the start-of-music flag and any context), its rules,
    settings, generator and hooks. After `run_rows`: `seq.tokens` (AMT ids) and `seq.reason`."""

    prompt: list[int]
    seq: MusicSequence
    sampling: SamplingConfig
    seed: int
    processors: Sequence[LogitsProcessor] = ()
    uncond_prompt: list[int] | None = None
    stop: Callable[[], bool] | None = None  # True once nobody waits for this row (a server request gone)
    tag: object = None  # the caller's (request and sample index, ...)
    offset: int = 0  # absolute tick of this window's time 0 (AMT times in the row are window-relative)
    rng: np.random.Generator = field(init=False)
    uncond_logits: np.ndarray | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    @property
    def tokens(self) -> list[int]:
        return self.seq.tokens


def guidance(scale: float) -> LogitsProcessor:
    """Classifier-free guidance for rows with an `uncond_prompt`: uncond + scale * (cond - uncond)."""

    def apply(row: Row, choice: Choice, logits: np.ndarray) -> np.ndarray:
        if row.uncond_logits is None:
            return logits
        with np.errstate(invalid="ignore"):  # -inf - -inf where the mask removed an id: stays -inf below
            out = row.uncond_logits + scale * (logits - row.uncond_logits)
        return np.where(np.isfinite(logits), out, -np.inf)

    return apply


def as_decoder(model) -> Decoder:
    """A Decoder as is; a transformers model wrapped in a TransformersDecoder."""
    if all(hasattr(model, name) for name in ("start", "feed", "logits")):
        return model
    from midilm.generate.backends.transformers import TransformersDecoder

    return TransformersDecoder(model)


def run_rows(model, rows: list[Row], music_offset: int, stop_id: int | None = None) -> int:
    """Sample every row to its end, in one batch; returns the number of steps. `model`: a Decoder, a
    transformers model, or a `vllm.LLM` (then `stop_id`, the tokenizer's end-of-text id, is needed)."""
    if not rows:
        return 0
    if _is_vllm(model):
        from midilm.generate.backends.vllm import run_rows_vllm

        return run_rows_vllm(model, rows, music_offset, stop_id)
    decoder = as_decoder(model)
    if any(not r.seq.constrained for r in rows) and hasattr(decoder, "with_full_vocabulary"):
        decoder = decoder.with_full_vocabulary()  # any music id may be drawn: a cut output layer will not do
    guided = [i for i, r in enumerate(rows) if r.uncond_prompt is not None]
    second = {i: len(rows) + k for k, i in enumerate(guided)}  # row -> its unconditioned decoder row
    prompts = [list(r.prompt) for r in rows] + [list(rows[i].uncond_prompt) for i in guided]
    decoder.start(prompts, max(r.seq.max_new_tokens for r in rows))
    many = getattr(decoder, "logits_many", None)
    steps = 0
    while True:
        steps += 1
        chosen: list[int | None] = [None] * len(rows)
        wanted: list[tuple[int, Choice]] = []
        for i, row in enumerate(rows):
            if row.stop is not None and not row.seq.done and row.stop():
                row.seq.finish("cancelled")
            c = row.seq.choice()
            if c is None:
                continue
            if c.forced:
                chosen[i] = c.lo
            else:
                wanted.append((i, c))
        # only the allowed blocks' logits are computed, all rows' at once where the backend can
        asks = [(i, music_offset + c.lo, music_offset + c.hi) for i, c in wanted]
        asks += [(second[i], music_offset + c.lo, music_offset + c.hi) for i, c in wanted if i in second]
        got = many(asks) if many is not None else [decoder.logits(*a) for a in asks]
        cond = got[: len(wanted)]
        uncond = dict(zip((i for i, _ in wanted if i in second), got[len(wanted) :])) if second else {}
        for (i, c), logits in zip(wanted, cond):
            row = rows[i]
            if c.mask is not None:
                logits = np.where(c.mask, logits, -np.inf)
            if i in uncond:
                u = np.asarray(uncond[i], dtype=np.float64)
                row.uncond_logits = u if c.mask is None else np.where(c.mask, u, -np.inf)
            if row.processors:  # processors get float64 (the draw works in float64 anyway)
                logits = np.asarray(logits, dtype=np.float64)
                for processor in row.processors:
                    logits = processor(row, c, logits)
            chosen[i] = draw(logits, c.lo, row.sampling, row.rng)
        for row, amt in zip(rows, chosen):
            if amt is not None:
                row.seq.accept(amt)
        if all(row.seq.done for row in rows):
            return steps
        ids = [None if amt is None else music_offset + amt for amt in chosen]
        decoder.feed(ids + [ids[i] for i in guided])


def _is_vllm(model) -> bool:
    return type(model).__module__.split(".")[0] == "vllm"


def sample_music(model, prompt_ids: Sequence[int], music_offset: int, sampling: SamplingConfig | None = None,
                 grammar: GrammarConfig | None = None, context: Sequence[int] = (), controls: Sequence[int] = (),
                 stop_id: int | None = None, processors: Sequence[LogitsProcessor] = ()) -> SampleResult:
    """`sampling.n` samples of one window after `prompt_ids` (which end with the start-of-music flag).

    `model`: a transformers causal LM, any `Decoder` or a `vllm.LLM`. `context`: AMT events already in the
    piece, appended to the prompt and walked by the grammar. `controls`: AMT control triplets (ids >=
    CONTROL_OFFSET) to force in for accompaniment or infilling. Pieces longer than one window, and
    everything a user asks for, go through `generate/schedule.py` and `generate/pipeline.py`.
    """
    sampling = sampling or SamplingConfig()
    sampling.validate()
    grammar = window_grammar(grammar, sampling.seconds)
    _, seeds = row_seeds(sampling.seed, sampling.n)
    prompt = list(prompt_ids) + [music_offset + int(t) for t in context]
    rows = [Row(prompt, MusicSequence(grammar, sampling.constrained, context, controls, sampling.max_new_tokens),
                sampling, seed, processors=processors) for seed in seeds]
    steps = run_rows(model, rows, music_offset, stop_id)
    return SampleResult([trim_partial(r.tokens) for r in rows], steps, [r.seq.reason for r in rows])
