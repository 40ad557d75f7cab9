"""Several text-to-MIDI requests in one batch: different prompts share each forward pass of the model.

`midilm.generate.sampler.sample_music` batches the n samples of one prompt. A server gets many prompts
at once, so here each row of the batch carries its own prompt (left-padded, with an attention mask and
position ids), grammar, sampling settings and random generator. A request's rows draw from its own
generator, so what a request gets depends only on its prompt, seed and settings, never on the requests
it was batched with. This covers requests whose music fits one AMT window (`seconds` <= WINDOW_SECONDS,
where `generate` samples a single window too); longer requests and continuations go through `generate`.
The rules per row are the AMT grammar's (`midilm.generate.grammar`), as in `sample_music`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from midilm.codecs.amt.decode import decode_tokens
from midilm.codecs.amt.vocab import MAX_TIME, NOTE_OFFSET, REST
from midilm.generate.grammar import NOTE, AmtGrammar, GrammarConfig
from midilm.generate.pipeline import (
    WINDOW_SECONDS,
    GenerateOptions,
    Generation,
    estimate_bpm,
    resolve_settings,
)
from midilm.generate.sampler import SamplingConfig, music_seconds


@dataclass
class BatchRequest:
    """One prompt with its options; `stop()` says the caller no longer waits (timed out or gone)."""

    prompt: str
    options: GenerateOptions
    stop: Callable[[], bool] = field(default=lambda: False)


def batchable(model, options: GenerateOptions) -> bool:
    """Whether `sample_batch` can serve these options with this model (a transformers model whose
    logits are a plain linear map of the last hidden state; constrained sampling of music within one window)."""
    inner = getattr(model, "model", None)
    if getattr(model, "backend", "transformers") != "transformers" or not hasattr(model, "layout"):
        return False
    if inner is None or not hasattr(inner, "get_decoder"):
        return False
    cfg = getattr(inner, "config", None)
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None) not in (None, 1.0):
        return False
    return options.constrained and options.seconds is not None and 0 < options.seconds <= WINDOW_SECONDS


def _sampling(options: GenerateOptions) -> SamplingConfig:
    return SamplingConfig(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k,
                          max_new_tokens=options.max_tokens, seconds=options.seconds, n=options.n,
                          seed=options.seed, constrained=options.constrained)


def _draw(row: torch.Tensor, base: int, sampling: SamplingConfig, gen: torch.Generator) -> int:
    """Temperature, top-k, then nucleus sampling of one id from a 1-D slice of logits starting at id `base`."""
    x = row.double() / sampling.temperature
    if 0 < sampling.top_k < x.numel():
        x = x.masked_fill(x < torch.topk(x, sampling.top_k).values[-1], float("-inf"))
    probs = torch.softmax(x, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, idx = torch.sort(probs, descending=True)
        # keep tokens while the mass before them is under top_p; the best token always stays
        drop = (torch.cumsum(sorted_p, dim=-1) - sorted_p) >= sampling.top_p
        probs = probs.scatter(0, idx, sorted_p.masked_fill(drop, 0.0))
    return base + int(torch.multinomial(probs, 1, generator=gen))


@torch.no_grad()
def sample_batch(model, requests: list[BatchRequest]) -> list[tuple[list[list[int]], list[str]]]:
    """Sample every request's n pieces in one batch; per request, its AMT ids and stop reasons per sample."""
    net, offset = model.model, model.layout.music_offset
    device = next(net.parameters()).device
    decoder, out_layer = net.get_decoder(), net.get_output_embeddings()
    rows = []  # (request index, sampling, grammar state, generator)
    prompts = []
    for r, req in enumerate(requests):
        instruments, _, _ = resolve_settings(req.prompt, req.options)
        sampling = _sampling(req.options)
        sampling.validate()
        grammar = GrammarConfig.make(instruments, max_notes_per_onset=req.options.max_notes_per_onset)
        grammar = GrammarConfig(**{**grammar.__dict__, "max_time": min(MAX_TIME - 1, int(sampling.seconds * 100) - 1)})
        gen = torch.Generator(device="cpu")
        gen.manual_seed(sampling.seed if sampling.seed is not None else int(torch.seed() % (2**63)))
        ids = model.prompt_ids(req.prompt)
        for _ in range(sampling.n):
            rows.append((r, sampling, AmtGrammar(grammar), gen))
            prompts.append(ids)
    width = max(len(p) for p in prompts)
    b = len(rows)
    input_ids = torch.zeros(b, width, dtype=torch.long)
    mask = torch.zeros(b, width, dtype=torch.long)
    for i, p in enumerate(prompts):  # left padding: every row's last prompt token sits in the last column
        input_ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    mask, positions = mask.to(device), positions.to(device)
    res = decoder(input_ids=input_ids.to(device), attention_mask=mask, position_ids=positions, use_cache=True)
    hidden, past = res.last_hidden_state[:, -1, :], res.past_key_values
    last_pos = positions[:, -1:]
    weight = out_layer.weight
    bias = getattr(out_layer, "bias", None)

    def logits(i: int, lo: int, hi: int) -> torch.Tensor:
        row = weight[lo:hi] @ hidden[i]
        return (row if bias is None else row + bias[lo:hi]).float().cpu()

    out: list[list[int]] = [[] for _ in range(b)]
    done = [False] * b
    reasons = [""] * b
    note_lo, note_hi = offset + NOTE_OFFSET, offset + REST
    while True:
        stopped = {r for r, req in enumerate(requests) if req.stop()}
        next_ids = torch.zeros(b, dtype=torch.long)
        for i, (r, sampling, st, gen) in enumerate(rows):
            if done[i]:
                continue
            if r in stopped:
                done[i], reasons[i] = True, "cancelled"
                continue
            if not st.can_continue():
                done[i], reasons[i] = True, "window full"
                continue
            if st.slot == NOTE:
                row = logits(i, note_lo, note_hi).masked_fill(~torch.from_numpy(st.allowed_notes()), float("-inf"))
                next_ids[i] = _draw(row, note_lo, sampling, gen)
            else:
                lo, hi = st.allowed_range()
                next_ids[i] = _draw(logits(i, offset + lo, offset + hi), offset + lo, sampling, gen)
        for i, (_, sampling, st, _) in enumerate(rows):
            if done[i]:
                continue
            amt = int(next_ids[i]) - offset
            st.advance(amt)
            out[i].append(amt)
            if len(out[i]) >= sampling.max_new_tokens:
                done[i], reasons[i] = True, "max tokens"
        if all(done):
            break
        mask = torch.cat([mask, torch.ones(b, 1, dtype=mask.dtype, device=device)], dim=1)
        last_pos = last_pos + 1
        res = decoder(input_ids=next_ids.view(b, 1).to(device), attention_mask=mask, position_ids=last_pos,
                      past_key_values=past, use_cache=True)
        hidden, past = res.last_hidden_state[:, -1, :], res.past_key_values
    results: list[tuple[list[list[int]], list[str]]] = [([], []) for _ in requests]
    for i, (r, *_rest) in enumerate(rows):
        tokens = out[i][: len(out[i]) - len(out[i]) % 3]  # whole triplets only
        results[r][0].append(tokens)
        results[r][1].append(reasons[i])
    return results


def to_generations(model, prompt: str, options: GenerateOptions, tokens: list[list[int]], reasons: list[str],
                   elapsed: float) -> list[Generation]:
    """Decode sampled ids on a tempo grid with the settings sidecar `generate` writes (same keys)."""
    instruments, bpm, meter = resolve_settings(prompt, options)
    out = []
    for k, toks in enumerate(tokens):
        chosen_bpm = bpm
        if chosen_bpm is None:
            rough, _ = decode_tokens(toks)
            chosen_bpm = estimate_bpm(rough) or 120.0
        piece, report = decode_tokens(toks, bpm=chosen_bpm, time_signature=meter or (4, 4))
        settings = {
            "prompt": prompt, "model": model.path, "backend": getattr(model, "backend", "transformers"), "sample": k,
            "seed": options.seed, "n": options.n,
            "temperature": options.temperature, "top_p": options.top_p, "top_k": options.top_k,
            "max_tokens": options.max_tokens, "seconds": options.seconds, "constrained": options.constrained,
            "instruments": instruments, "bpm": round(chosen_bpm, 2),
            "bpm_source": "option" if options.bpm else "prompt" if bpm else "estimated",
            "time_signature": f"{(meter or (4, 4))[0]}/{(meter or (4, 4))[1]}", "tokens": len(toks),
            "notes": len(piece), "music_seconds": round(music_seconds(toks), 2),
            "generation_seconds": round(elapsed, 3), "stop_reason": reasons[k], "decode": report.as_dict(),
        }
        out.append(Generation(piece, toks, report, settings))
    return out


def generate_batch(model, requests: list[BatchRequest]) -> list[list[Generation]]:
    """`generate` for several batchable requests at once (see `batchable`)."""
    t0 = time.perf_counter()
    sampled = sample_batch(model, requests)
    elapsed = time.perf_counter() - t0
    return [to_generations(model, req.prompt, req.options, toks, reasons, elapsed)
            for req, (toks, reasons) in zip(requests, sampled)]
