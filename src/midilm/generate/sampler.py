"""Grammar-constrained sampling of AMT music with a transformers causal LM and its KV cache.

One loop, nanoGPT-style: run the prompt once, then one token per step for all samples of the batch.
At each step the logits outside what the grammar allows are set to -inf (only music ids, the slot
order, non-decreasing time, the instrument allow-list, at most 15 melodic instruments, a cap on notes
per onset), then temperature, top-k and top-p apply and one id is drawn. Anticipated controls (a
melody to accompany) are forced into the sequence 5 s ahead of their time, as AMT was trained.
A sequence stops at `max_new_tokens`, at `seconds` of music, or when the grammar has nothing left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

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


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature, then top-k, then nucleus filtering, on a [batch, vocab] tensor (in place-safe)."""
    logits = logits / temperature
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop tokens once the mass before them already reaches top_p; the best token always stays
        drop = (torch.cumsum(probs, dim=-1) - probs) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    return logits


class _SliceHead:
    """The model split into its decoder and output layer, so a step computes only the logit rows it needs
    (a time, duration or note block is 1-16k of the vocabulary's rows; the output layer dominates tiny
    models' cost). Models whose logits are more than a linear map of the last hidden state use the full
    forward pass."""

    def __init__(self, model):
        self.model = model
        self.out = model.get_output_embeddings()
        cfg = model.config
        self.split = (
            hasattr(model, "get_decoder") and self.out is not None
            and not getattr(cfg, "final_logit_softcapping", None) and getattr(cfg, "logit_scale", None) in (None, 1.0)
        )
        self.vocab = int(cfg.vocab_size)

    def step(self, input_ids: torch.Tensor, past):
        if self.split:
            res = self.model.get_decoder()(input_ids=input_ids, past_key_values=past, use_cache=True)
            return res.last_hidden_state[:, -1, :], res.past_key_values
        res = self.model(input_ids=input_ids, past_key_values=past, use_cache=True)
        return res.logits[:, -1, :], res.past_key_values

    def logits(self, hidden: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        if not self.split:
            return hidden[lo:hi].float().cpu()
        row = self.out.weight[lo:hi] @ hidden
        if getattr(self.out, "bias", None) is not None:
            row = row + self.out.bias[lo:hi]
        return row.float().cpu()


def _draw(row: torch.Tensor, base: int, sampling: SamplingConfig, gen: torch.Generator) -> int:
    """Draw one id from a 1-D slice of logits whose first entry is id `base`."""
    filtered = filter_logits(row.unsqueeze(0), sampling.temperature, sampling.top_k, sampling.top_p)
    return base + int(torch.multinomial(torch.softmax(filtered, dim=-1), 1, generator=gen))


def _controls_by_time(controls: Sequence[int]) -> list[tuple[int, list[int]]]:
    trip = [list(controls[i : i + 3]) for i in range(0, len(controls) - len(controls) % 3, 3)]
    return sorted(((t[0] - ATIME_OFFSET, t) for t in trip), key=lambda x: x[0])


@torch.no_grad()
def sample_music(
    model,
    prompt_ids: Sequence[int],
    music_offset: int,
    sampling: SamplingConfig | None = None,
    grammar: GrammarConfig | None = None,
    context: Sequence[int] = (),
    controls: Sequence[int] = (),
) -> SampleResult:
    """Sample music ids after `prompt_ids` (which end with the start-of-music flag).

    `context`: AMT events already in the piece (continuation), appended to the prompt and walked by
    the grammar. `controls`: AMT control triplets (ids >= CONTROL_OFFSET) to interleave for
    accompaniment or infilling.
    """
    sampling = sampling or SamplingConfig()
    sampling.validate()
    grammar = grammar or GrammarConfig()
    if sampling.seconds is not None:
        grammar = GrammarConfig(**{**grammar.__dict__, "max_time": min(MAX_TIME - 1, int(sampling.seconds * 100) - 1)})
    device = next(model.parameters()).device
    n = sampling.n
    gen = torch.Generator(device="cpu")
    gen.manual_seed(sampling.seed if sampling.seed is not None else int(torch.seed() % (2**63)))

    states = [AmtGrammar(grammar) for _ in range(n)]
    for tok in context:  # the given part of the piece: the grammar walks it, without constraints
        for st in states:
            _walk_unchecked(st, int(tok))
    prompt = list(prompt_ids) + [music_offset + int(t) for t in context]
    pending = [_controls_by_time(controls) for _ in range(n)]
    queue: list[list[int]] = [[] for _ in range(n)]
    out: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    reasons = [""] * n

    head = _SliceHead(model)
    input_ids = torch.tensor([prompt] * n, dtype=torch.long, device=device)
    hidden, past = head.step(input_ids, None)
    note_lo, note_hi = music_offset + NOTE_OFFSET, music_offset + REST
    steps = 0
    while not all(done):
        steps += 1
        next_ids = torch.zeros(n, dtype=torch.long)
        for i, st in enumerate(states):
            if done[i]:
                continue
            if st.slot == TIME and pending[i] and not queue[i] and st.time >= pending[i][0][0] - DELTA:
                queue[i] = list(pending[i].pop(0)[1])
            if queue[i]:
                next_ids[i] = music_offset + queue[i].pop(0)
                continue
            if not sampling.constrained:
                # MIDI-LLM's only constraint: any music id (events, controls, separator), no grammar
                a, b = music_offset, music_offset + SEPARATOR + 1
                next_ids[i] = _draw(head.logits(hidden[i], a, b), a, sampling, gen)
                continue
            if not st.can_continue():
                done[i], reasons[i] = True, "window full"
                continue
            # only the allowed block's rows of the output layer are computed and sampled from
            if st.slot == NOTE:
                row = head.logits(hidden[i], note_lo, note_hi)
                row = row.masked_fill(~torch.from_numpy(st.allowed_notes()), float("-inf"))
                next_ids[i] = _draw(row, note_lo, sampling, gen)
            else:
                lo, hi = st.allowed_range()
                a, b = music_offset + lo, music_offset + hi
                next_ids[i] = _draw(head.logits(hidden[i], a, b), a, sampling, gen)
        for i in range(n):
            if done[i]:
                continue
            tok = int(next_ids[i])
            amt = tok - music_offset
            if not sampling.constrained:
                _walk_unchecked(states[i], amt)
            elif amt < CONTROL_OFFSET:  # forced controls are outside the grammar
                states[i].advance(amt)
            out[i].append(amt)
            if len(out[i]) >= sampling.max_new_tokens:
                done[i], reasons[i] = True, "max tokens"
        if all(done):
            break
        hidden, past = head.step(next_ids.view(n, 1).to(device), past)
    for i in range(n):
        out[i] = _trim_partial(out[i])
    return SampleResult(out, steps, reasons)


def _walk_unchecked(st: AmtGrammar, amt: int) -> None:
    """Follow given ids (context, or unconstrained samples) without enforcing the grammar."""
    try:
        st.advance(amt)
    except ValueError:
        st.slot = (st.slot + 1) % 3


def _trim_partial(tokens: list[int]) -> list[int]:
    """Drop a trailing incomplete event so the output is whole triplets (controls count as events)."""
    return tokens[: len(tokens) - len(tokens) % 3]


def music_seconds(tokens: Sequence[int]) -> float:
    """Seconds of music in AMT events (last onset plus its duration)."""
    arr = np.asarray(tokens[: len(tokens) - len(tokens) % 3], dtype=np.int64).reshape(-1, 3)
    if not len(arr):
        return 0.0
    times = np.where(arr[:, 0] >= CONTROL_OFFSET, arr[:, 0] - CONTROL_OFFSET, arr[:, 0])
    durs = np.where(arr[:, 1] >= CONTROL_OFFSET, arr[:, 1] - CONTROL_OFFSET, arr[:, 1]) - 10000
    return float((times + durs).max()) / 100.0
