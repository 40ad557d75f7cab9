"""MIDI-LLM's released shape on a CPU: seconds for 2,046 tokens with transformers and llama.cpp (q8_0, events head).

    python benchmarks/bench_real_shape.py [--threads 2] [--transformers-tokens 64] [--llamacpp-tokens 2046]
        [--backends transformers,llamacpp] [--keep DIR]

A random-weight model of exactly MIDI-LLM's configuration (Llama-3.2-1B: hidden 2,048, 16 layers, 32
heads, 8 KV heads, intermediate 8,192, rope theta 500,000, tied embeddings; vocabulary 183,286 rows) is
built, saved, and sampled through midilm's own constrained loop (`midilm.generate.engine.sample_music`,
what `midilm generate` runs) on each backend; speed does not depend on what the weights learned. The
paper's figure to compare with: about 10 s for 2,046 tokens on a GPU (vLLM).

When a backend would take too long here, time fewer tokens and extrapolate to 2,046 linearly: at this
size the weights (read once per token) dominate, the growing context adds little, so the linear figure
is a slight underestimate; the table says which rows are extrapolated. Wall and CPU seconds of this
process are both reported (the machine may be shared: CPU time is the steadier figure).
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from pathlib import Path

PUBLISHED_GPU_SECONDS = 10.0
FULL = 2046


def build(model_dir: Path):
    """The random-weight model of MIDI-LLM's shape, saved (bf16, as released) with a layout and a tokenizer."""
    import torch
    from transformers import LlamaForCausalLM

    from midilm.codecs.amt.vocab import LLAMA3_TEXT_VOCAB
    from midilm.models.tokenizer import train_text_tokenizer
    from midilm.models.vocab import MusicLayout
    from midilm.train.t2m import real_shape_config

    torch.manual_seed(0)
    t = time.perf_counter()
    model = LlamaForCausalLM(real_shape_config()).eval()
    built = time.perf_counter() - t
    model.save_pretrained(model_dir, state_dict={k: v.to(torch.bfloat16) for k, v in model.state_dict().items()})
    layout = MusicLayout(LLAMA3_TEXT_VOCAB)
    layout.save(model_dir)
    # a small tokenizer only for the GGUF metadata (the converter pads the text vocabulary)
    train_text_tokenizer(["a tokenizer for the GGUF copy of a random model"] * 4, 300, model_dir)
    return model, layout, built


def run(decoder, prompt: list[int], offset: int, tokens: int) -> tuple[int, float, float]:
    """(tokens made, wall s, CPU s) of one constrained sample of `tokens` ids."""
    from midilm.generate.engine import sample_music
    from midilm.generate.grammar import GrammarConfig
    from midilm.generate.sampler import SamplingConfig

    grammar = GrammarConfig(max_notes_per_onset=10_000)  # never runs out of room: exactly `tokens` ids
    cfg = SamplingConfig(max_new_tokens=tokens, seed=0, constrained=True)
    t, c = time.perf_counter(), time.process_time()
    out = sample_music(decoder, prompt, offset, cfg, grammar)
    return len(out.tokens[0]), time.perf_counter() - t, time.process_time() - c


def main() -> None:
    import torch

    from midilm.codecs.amt.vocab import AUTOREGRESS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--transformers-tokens", type=int, default=64, help="tokens timed (then extrapolated)")
    ap.add_argument("--llamacpp-tokens", type=int, default=FULL, help="tokens timed (then extrapolated)")
    ap.add_argument("--backends", default="transformers,llamacpp")
    ap.add_argument("--gguf-type", default="q8_0", help="the llama.cpp file's type (q8_0 as released; f16, f32)")
    ap.add_argument("--keep", default=None, help="keep the model folder and GGUF here (default: a temporary one)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-real-shape-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "model"
    rows: list[tuple[str, int, float, float]] = []
    notes: list[str] = []
    def say(line: str) -> None:
        print(f"bench_real_shape: {line}", file=sys.stderr, flush=True)

    try:
        if (model_dir / "config.json").is_file():  # kept from an earlier run (--keep)
            from midilm.models.vocab import layout_for

            layout, model = layout_for(model_dir), None
        else:
            model, layout, built = build(model_dir)
            params = sum(p.numel() for p in model.parameters())
            notes.append(f"model built in {built:.0f} s: {params:,} parameters, vocabulary "
                         f"{model.config.vocab_size:,}")
            say(notes[-1])
        offset = layout.music_offset
        # MIDI-LLM's prompt is about 40 text ids; any ids below the music block do
        prompt = [128000] + list(range(1000, 1040)) + [offset + AUTOREGRESS]
        if "transformers" in args.backends:
            if model is None:
                from transformers import AutoModelForCausalLM

                model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
            run(model, prompt, offset, 3)  # warm-up
            n, wall, cpu = run(model, prompt, offset, args.transformers_tokens)
            rows.append(("transformers fp32, our loop", n, wall, cpu))
            say(f"{rows[-1]}")
        del model
        gc.collect()
        if "llamacpp" in args.backends:
            from midilm.generate.backends.llamacpp import LlamaCppDecoder
            from midilm.models.gguf import export_gguf, input_embeddings

            kind = args.gguf_type
            path = work / f"model-{kind}-events.gguf"
            if not path.is_file():
                t = time.perf_counter()
                export_gguf(model_dir, path, kind, "events")
                notes.append(f"GGUF {kind} events head: {path.stat().st_size / 2**30:.2f} GiB, converted in "
                             f"{time.perf_counter() - t:.0f} s (once; `midilm generate` caches it)")
                say(notes[-1])
            gc.collect()
            decoder = LlamaCppDecoder(path, threads=args.threads, input_rows=lambda: input_embeddings(model_dir))
            say("llama.cpp loaded the GGUF")
            run(decoder, prompt, offset, 3)  # warm-up (also reads the input rows once)
            n, wall, cpu = run(decoder, prompt, offset, args.llamacpp_tokens)
            rows.append((f"llama.cpp {kind} events head, our loop", n, wall, cpu))
            say(f"{rows[-1]}")
            decoder.close()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"MIDI-LLM's shape (Llama-3.2-1B, 183,286 rows), random weights, {args.threads} thread(s)\n")
    print("| backend | tokens timed | wall s | CPU s | s per 2,046 tokens: wall | CPU | vs 10 s on a GPU (wall) |")
    print("|---|---|---|---|---|---|---|")
    for label, n, wall, cpu in rows:
        per, per_cpu = wall / n * FULL, cpu / n * FULL
        how = "" if n >= FULL else f" (extrapolated from {n})"
        print(f"| {label} | {n} | {wall:.1f} | {cpu:.1f} | {per:.0f}{how} | {per_cpu:.0f} | "
              f"{per / PUBLISHED_GPU_SECONDS:.0f}x |")
    print()
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
