"""The vLLM backend (GPU): vLLM runs the sampling loop, a logits processor applies the same AMT grammar.

vLLM's V1 engine takes custom logits processors as classes given to `LLM(..., logits_processors=[...])`,
with per-request settings in `SamplingParams(extra_args=...)`; per-request callables in SamplingParams
are gone. vLLM 0.33 has two model runners with two processor interfaces: Model Runner V2 (the default
where it applies; `vllm.v1.worker.gpu.sample.logits_processor.LogitsProcessor`: `add_request(slot,
params)` and `apply(logits, ctx)` with the rows' slots, positions and input ids) and the legacy V1
runner (`vllm.v1.sample.logits_processor.LogitsProcessor`: `update_state(BatchUpdate)` with live
references to each request's output ids, then `apply(logits)`). `MidiGrammarLogitsProcessor` subclasses
both, so the engine's loader accepts it whichever runner it picks, and wraps one pure-Python core,
`GrammarBatch`: a `MusicSequence` (the rules of `generate/sampler.py`) per request slot, advanced
by the request's new output ids, and the row mask it implies (the allowed block, the note mask, a forced
control id, or only the stop id once the grammar is finished), then the request's steering on the
allowed block: the key prior, beat grid and gap penalty of `generate/steering.py`, by the very processor the
engine runs (`steering_processor`, rebuilt in the worker from the request's `SteeringConfig`, called with the
slot's grammar state in place of the engine's row). Classifier-free guidance is refused: it needs a second,
unconditioned forward pass per row, which a logits processor cannot run. The core needs no vLLM and is
tested on CPU. Temperature, top-k, top-p and seeds are vLLM's own (applied after the processors, as the
engine's draw is). Speculative decoding is not supported (one logits row per request is assumed).

Run on a GPU: `midilm generate "..." -o out.mid --backend vllm --model DIR` (see docs/backends.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from midilm.generate.grammar import GrammarConfig
from midilm.generate.sampler import Choice, MusicSequence, SamplingConfig, trim_partial
from midilm.generate.steering import SteeringConfig, steering_processor

ARGS_KEY = "midilm_grammar"  # the key of our settings in SamplingParams.extra_args
CFG_REFUSED = ("classifier-free guidance (cfg other than 1) needs the transformers or llamacpp backend: it runs an "
               "unconditioned second pass per sample, which vLLM's logits processors cannot")
PROCESSOR = "midilm.generate.backends.vllm:MidiGrammarLogitsProcessor"  # by name: vLLM's workers import it


# --- per-request settings, JSON-safe (they cross vLLM's process boundary in msgpack) -------------------


def request_args(music_offset: int, stop_id: int, prompt_len: int, sampling: SamplingConfig,
                 grammar: GrammarConfig, context: Sequence[int] = (), controls: Sequence[int] = (),
                 max_new_tokens: int | None = None, until: int | None = None,
                 steering: SteeringConfig | None = None, offset: int = 0) -> dict:
    """A request's settings for the processor. `steering`: the biases to apply (None: none); `offset`: the
    absolute tick of the window's time 0 (`engine.Row.offset`), which keeps the beat grid on the piece's clock."""
    g = asdict(grammar)
    g["instruments"] = None if grammar.instruments is None else sorted(grammar.instruments)
    g["pitch_range"] = list(grammar.pitch_range)
    return {"music_offset": int(music_offset), "stop_id": int(stop_id), "prompt_len": int(prompt_len),
            "constrained": bool(sampling.constrained),
            "max_new_tokens": int(sampling.max_new_tokens if max_new_tokens is None else max_new_tokens),
            "until": None if until is None else int(until),
            "grammar": g, "context": [int(t) for t in context], "controls": [int(t) for t in controls],
            "steering": None if steering is None or not steering.active else asdict(steering),
            "offset": int(offset)}


def validate_args(args: dict) -> None:
    """Raise ValueError for settings a request cannot run with (vLLM calls this at admission)."""
    if not isinstance(args, dict):
        raise ValueError(f"extra_args[{ARGS_KEY!r}] must be a dict")
    for key in ("music_offset", "stop_id", "prompt_len", "max_new_tokens"):
        if not isinstance(args.get(key), int) or args[key] < 0:
            raise ValueError(f"extra_args[{ARGS_KEY!r}][{key!r}] must be a non-negative integer")
    if not isinstance(args.get("offset", 0), int):
        raise ValueError(f"extra_args[{ARGS_KEY!r}]['offset'] must be an integer")
    _sequence(args)
    _steering(args)


def _steering(args: dict) -> SteeringConfig | None:
    """The request's SteeringConfig (None: no biases); CFG is refused (see the module docstring)."""
    d = args.get("steering")
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ValueError(f"extra_args[{ARGS_KEY!r}]['steering'] must be a dict")
    d = dict(d)
    # JSON turns the tuples into lists
    d["key"] = None if d.get("key") is None else tuple(d["key"])
    d["meter"] = tuple(d.get("meter", (4, 4)))
    try:
        config = SteeringConfig(**d)
    except TypeError as e:
        raise ValueError(f"extra_args[{ARGS_KEY!r}]['steering']: {e}") from None
    if config.cfg_scale != 1.0:
        raise ValueError(CFG_REFUSED)
    return config


def _sequence(args: dict) -> MusicSequence:
    g = dict(args.get("grammar") or {})
    g["pitch_range"] = tuple(g.get("pitch_range", (0, 127)))
    instruments = g.pop("instruments", None)
    grammar = GrammarConfig.make(instruments, **g)
    until = args.get("until")
    return MusicSequence(grammar, bool(args.get("constrained", True)), args.get("context", ()),
                         args.get("controls", ()), int(args["max_new_tokens"]), None if until is None else int(until))


# --- the core: grammar state per slot and the masks it gives --------------------------------------------


class _Slot:
    """One request's state. It is also the `row` its steering processor sees, as the engine's `Row` would be:
    `seq` (the grammar state), `offset` (the window's absolute start) and no unconditioned logits."""

    uncond_logits = None

    def __init__(self, args: dict):
        self.seq = _sequence(args)
        self.music_offset, self.stop_id, self.prompt_len = args["music_offset"], args["stop_id"], args["prompt_len"]
        self.offset = int(args.get("offset", 0))
        steering = _steering(args)
        self.steer = None if steering is None else steering_processor(steering)
        self.seen = 0  # output ids already walked
        self.ended = False  # the stop id was sampled, or an id broke the grammar: only the stop id may follow
        self.error = ""

    def choice(self) -> Choice | None:
        """What may come next (AMT ids), None once only the stop id may."""
        return None if self.ended else self.seq.choice()

    def take(self, token: int) -> None:
        self.seen += 1
        if self.ended:
            return
        if token == self.stop_id or self.seq.done:
            self.ended = True
            return
        try:
            self.seq.accept(token - self.music_offset)
        except ValueError as e:  # another stage overrode our mask: stop the request rather than the engine
            self.ended, self.error = True, str(e)


class GrammarBatch:
    """The grammar of every constrained request in a vLLM batch, keyed by the request's slot (row index)."""

    def __init__(self) -> None:
        self.slots: dict[int, _Slot] = {}

    def add(self, slot: int, extra_args: dict | None) -> bool:
        """Start a request's state; False (and no state) for a request without our settings."""
        args = (extra_args or {}).get(ARGS_KEY)
        self.slots.pop(slot, None)
        if args is None:
            return False
        self.slots[slot] = _Slot(args)
        return True

    def remove(self, slot: int) -> None:
        self.slots.pop(slot, None)

    def move(self, src: int, dst: int, swap: bool) -> None:
        a, b = self.slots.pop(src, None), self.slots.pop(dst, None)
        if a is not None:
            self.slots[dst] = a
        if swap and b is not None:
            self.slots[src] = b

    def observe(self, slot: int, output_ids: Sequence[int]) -> None:
        """Walk the output ids the slot has not seen yet (the V1 runner's live list of a request's ids)."""
        s = self.slots.get(slot)
        if s is None:
            return
        for token in output_ids[s.seen :]:
            s.take(int(token))

    def observe_last(self, slot: int, position: int, last_token: int) -> None:
        """Model Runner V2: the row computes the token after `position`, whose input id is `last_token`."""
        s = self.slots.get(slot)
        if s is None:
            return
        produced = position + 1 - s.prompt_len  # output ids up to and including the input id
        if produced <= s.seen:  # a prefill chunk, or a request resumed after preemption
            return
        if produced > s.seen + 1:
            s.ended, s.error = True, f"output ids {s.seen}..{produced - 2} were never seen (speculative decoding?)"
            return
        s.take(int(last_token))

    def allowed(self, slot: int) -> tuple[int, int, torch.Tensor | None]:
        """[lo, hi) of vocabulary ids the slot may sample next, with a boolean mask over them or None."""
        s = self.slots[slot]
        return self._block(s, s.choice())

    @staticmethod
    def _block(s: _Slot, choice: Choice | None) -> tuple[int, int, torch.Tensor | None]:
        if choice is None:
            return s.stop_id, s.stop_id + 1, None
        mask = None if choice.mask is None else torch.from_numpy(choice.mask)
        return s.music_offset + choice.lo, s.music_offset + choice.hi, mask

    def mask_row(self, logits: torch.Tensor, row: int, slot: int) -> None:
        """Set every logit of `row` that the slot's grammar does not allow to -inf and steer the rest, in place.

        Steering runs as in the engine: on the allowed block with the disallowed ids already -inf, in float64,
        never on a forced id; the result is stored back in the logits' own dtype."""
        s = self.slots[slot]
        choice = s.choice()
        lo, hi, mask = self._block(s, choice)
        r = logits[row]
        keep = r[lo:hi].clone()
        if mask is not None:
            keep.masked_fill_(~mask.to(keep.device, non_blocking=True), float("-inf"))
        if s.steer is not None and choice is not None and not choice.forced:
            block = s.steer(s, choice, keep.detach().to("cpu", torch.float64).numpy())
            keep = torch.from_numpy(np.ascontiguousarray(block)).to(keep.device, keep.dtype)
        r.fill_(float("-inf"))
        r[lo:hi] = keep


# --- vLLM's two processor interfaces, in one class ----------------------------------------------------

try:
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as _V2Base
except ImportError:  # no vLLM here (or one without Model Runner V2)
    _V2Base = None
try:
    from vllm.v1.sample.logits_processor import LogitsProcessor as _V1Base
    from vllm.v1.sample.logits_processor import MoveDirectionality as _Move
except ImportError:
    _V1Base = _Move = None
_BASES = tuple(b for b in (_V2Base, _V1Base) if b is not None)


if _BASES:

    class MidiGrammarLogitsProcessor(*_BASES):
        """The grammar for vLLM. It subclasses both runners' interfaces, so whichever model runner the engine
        picks, its loader accepts the class: Model Runner V2 calls `add_request` and `apply(logits, ctx)`,
        the legacy V1 runner `update_state(batch_update)` and `apply(logits)`."""

        def __init__(self, vllm_config, *args, **kwargs):  # V2: (config, req_states); V1: (config, device, pin)
            self.batch = GrammarBatch()
            self.outputs: dict[int, list[int]] = {}  # V1: slot -> the request's live list of output ids

        @classmethod
        def validate_params(cls, sampling_params) -> None:
            args = (sampling_params.extra_args or {}).get(ARGS_KEY)
            if args is not None:
                validate_args(args)

        def is_argmax_invariant(self) -> bool:
            return False

        def add_request(self, req_idx: int, sampling_params) -> bool:
            return self.batch.add(req_idx, sampling_params.extra_args)

        def update_state(self, batch_update) -> None:
            if batch_update is not None:
                for slot in batch_update.removed:
                    self.batch.remove(slot)
                    self.outputs.pop(slot, None)
                for added in batch_update.added:  # (slot, params, prompt ids, output ids)
                    slot, params, output_ids = added[0], added[1], added[-1]
                    if self.batch.add(slot, params.extra_args):
                        self.outputs[slot] = output_ids
                    else:
                        self.outputs.pop(slot, None)
                for src, dst, direction in batch_update.moved:
                    swap = direction == _Move.SWAP
                    self.batch.move(src, dst, swap)
                    a, b = self.outputs.pop(src, None), self.outputs.pop(dst, None)
                    if a is not None:
                        self.outputs[dst] = a
                    if swap and b is not None:
                        self.outputs[src] = b
            for slot, output_ids in self.outputs.items():
                self.batch.observe(slot, output_ids)

        def apply(self, logits: torch.Tensor, ctx=None) -> torch.Tensor:
            if not self.batch.slots:
                return logits
            if ctx is None:  # V1: row = slot, state already advanced by update_state
                for slot in self.batch.slots:
                    if slot < logits.shape[0]:
                        self.batch.mask_row(logits, slot, slot)
                return logits
            # V2: each row names its slot, position and input id; one host copy per step, the grammar being Python
            slots = ctx.expanded_idx_mapping.tolist()
            positions, inputs = ctx.pos.tolist(), ctx.input_ids.tolist()
            for row, slot in enumerate(slots):
                if slot in self.batch.slots:
                    self.batch.observe_last(slot, positions[row], inputs[row])
                    self.batch.mask_row(logits, row, slot)
            return logits


# --- loading and sampling --------------------------------------------------------------------------------


def import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise ImportError("the vllm backend needs vLLM and a CUDA GPU: pip install 'midilm[vllm]' "
                          "(vLLM pins its own torch build)") from e
    return vllm


def load_vllm(model_dir: str | Path, dtype: str | None = None, device: str | None = None, **llm_options):
    """A `vllm.LLM` for a local model directory with our grammar processor installed."""
    vllm = import_vllm()
    if device not in (None, "cuda", "gpu"):
        raise ValueError(f"the vllm backend runs on a CUDA GPU; device {device!r} is not supported")
    options = {"dtype": {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype or "", "auto"),
               **llm_options}
    return vllm.LLM(model=str(model_dir), logits_processors=[PROCESSOR], **options)


def _walk_output(seq: MusicSequence, music_offset: int, stop_id: int, output_ids: Sequence[int]) -> None:
    """Accept one completion's vocabulary ids into its sequence, up to the stop id; set the stop reason."""
    for token in output_ids:
        if token == stop_id or seq.done:
            break
        seq.accept(int(token) - music_offset)
    if not seq.done:
        seq.choice()  # sets the reason when the grammar has nothing left
    seq.finish("max tokens" if len(seq.tokens) >= seq.max_new_tokens else "stopped")


def parse_output(args: dict, output_ids: Sequence[int]) -> tuple[list[int], str]:
    """AMT ids and a stop reason from one completion's vocabulary ids (the stop id dropped)."""
    seq = _sequence(args)
    _walk_output(seq, args["music_offset"], args["stop_id"], output_ids)
    return trim_partial(seq.tokens), seq.reason


def _row_steering(row) -> SteeringConfig | None:
    """The steering of a row's processors. Only a steering processor can cross into vLLM's workers, as its
    config (`steering_processor(config).config`); any other Python callable is refused."""
    configs = [getattr(p, "config", None) for p in row.processors]
    if not all(isinstance(c, SteeringConfig) for c in configs) or len(configs) > 1:
        raise ValueError("the vllm backend runs one steering processor per request and no other logits "
                         "processors; use the transformers or llamacpp backend for those")
    if configs and configs[0].cfg_scale != 1.0:
        raise ValueError(CFG_REFUSED)
    return configs[0] if configs else None


def run_rows_vllm(llm, rows, music_offset: int, stop_id: int | None) -> int:
    """The engine's rows (`generate/engine.py`) on vLLM: one request per row, all in one `generate` call, each
    with the row's seed and settings; vLLM's loop samples, our logits processor applies the row's rules."""
    if stop_id is None:
        raise ValueError("the vLLM backend needs the tokenizer's end-of-text id to stop a sequence")
    if any(r.uncond_prompt is not None for r in rows):
        raise ValueError(CFG_REFUSED)
    steering = [_row_steering(r) for r in rows]  # refused before vLLM is even imported
    from vllm import SamplingParams

    params = []
    for r, steer in zip(rows, steering):
        seq = r.seq
        args = request_args(music_offset, stop_id, len(r.prompt), r.sampling, seq.grammar, seq.context,
                            seq.controls, seq.max_new_tokens, seq.until, steer, r.offset)
        params.append(SamplingParams(n=1, temperature=r.sampling.temperature, top_p=r.sampling.top_p,
                                     top_k=r.sampling.top_k, seed=r.seed, max_tokens=seq.max_new_tokens + 1,
                                     stop_token_ids=[stop_id], detokenize=False, extra_args={ARGS_KEY: args}))
    outputs = llm.generate([{"prompt_token_ids": list(r.prompt)} for r in rows], params, use_tqdm=False)
    for r, out in zip(rows, outputs):
        _walk_output(r.seq, music_offset, stop_id, list(out.outputs[0].token_ids))
    return max((len(r.seq.tokens) for r in rows), default=0)
