"""Generation speed per backend: the shared constrained loop on transformers and llama.cpp, against plain
`transformers` `generate` on the same model.

    python benchmarks/bench_generate.py [--model DIR] [--tokens 2046] [--threads 1] [--repeat 2]
        [--backends transformers,llamacpp] [--gguf-types q8_0,f16] [--agreement 2046]

Without --model it builds the shipped model's architecture with random weights (speed does not depend
on what the weights learned). For each backend: our loop with the grammar, our loop without it (the
cost of the constraints) and, once, `model.generate` sampling with top-p and no constraints (the
baseline). Reported: tokens, wall seconds and CPU seconds of this process (the machine is shared: CPU
time is the steadier figure), tokens per second, seconds for 2,046 tokens and the real-time factor
(seconds of music per second of compute). Each llama.cpp type runs twice: the full GGUF and the
"events head" one that `midilm generate --backend llamacpp` uses (constrained only). With --agreement N,
greedy decoding on each is compared with transformers' over N tokens (where the two first differ).
vLLM needs a GPU: run it with --backends vllm on one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def random_model(text_vocab: int = 2048, hidden: int = 256, layers: int = 4):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from midilm.models.vocab import MUSIC_ROWS

    cfg = LlamaConfig(vocab_size=text_vocab + MUSIC_ROWS, hidden_size=hidden, intermediate_size=704,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=4096, tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval(), text_vocab


def timed(fn, repeat: int):
    """(result, wall seconds, CPU seconds) of the fastest of `repeat` runs."""
    best = None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        if best is None or wall < best[1]:
            best = (out, wall, cpu)
    return best


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


def main() -> None:
    import torch

    from midilm.codecs.amt.vocab import AUTOREGRESS
    from midilm.generate.grammar import GrammarConfig
    from midilm.generate.sampler import SamplingConfig, music_seconds, sample_music

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--tokens", type=int, default=2046)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--backends", default="transformers,llamacpp")
    ap.add_argument("--gguf-types", default="q8_0,f16")
    ap.add_argument("--agreement", type=int, default=0, help="greedy tokens to compare with transformers")
    ap.add_argument("--prompt", default="A cheerful pop song with piano, bass and drums in C major at 120 bpm.")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    backends = args.backends.split(",")
    tmp = tempfile.TemporaryDirectory(prefix="bench-generate-")  # GGUF copies; removed at exit
    work = Path(tmp.name)
    if args.model:
        from midilm.models.midi_llm import load_text_to_midi

        m = load_text_to_midi(args.model)
        model, offset, prompt, model_dir = m.model, m.layout.music_offset, m.prompt_ids(args.prompt), args.model
        name = args.model
    else:
        model, offset = random_model()
        prompt = [0] + list(range(5, 40)) + [offset + AUTOREGRESS]
        model_dir = work / "random"
        model.save_pretrained(model_dir)
        from midilm.models.tokenizer import train_text_tokenizer

        train_text_tokenizer(["a tokenizer for the GGUF copy of a random model"] * 4, 300, model_dir)
        name = "random weights, shipped architecture"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    # a grammar that never runs out of room, so every run makes exactly the requested tokens
    grammar = GrammarConfig(max_notes_per_onset=10_000)
    rows: list[tuple[str, int, float, float, float | None]] = []
    notes: list[str] = []

    def bench_loop(label: str, decoder, unconstrained: bool = True) -> None:
        for suffix, constrained in (("constrained", True), ("unconstrained", False))[: 2 if unconstrained else 1]:
            cfg = SamplingConfig(max_new_tokens=args.tokens, seed=0, constrained=constrained)
            r, wall, cpu = timed(lambda cfg=cfg: sample_music(decoder, prompt, offset, cfg, grammar), args.repeat)
            toks = r.tokens[0]
            rows.append((f"{label}, {suffix}", len(toks), wall, cpu, music_seconds(toks) if constrained else None))

    if "transformers" in backends:
        bench_loop("transformers, our loop", model)
        with torch.no_grad():
            ids = torch.tensor([prompt])

            def baseline():
                return model.generate(ids, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=True,
                                      top_p=0.98, temperature=1.0, pad_token_id=0)

            out, wall, cpu = timed(baseline, args.repeat)
        rows.append(("transformers generate (baseline, no constraints)", out.shape[1] - ids.shape[1], wall, cpu,
                     None))
    if "llamacpp" in backends:
        from midilm.generate.backends.llamacpp import LlamaCppDecoder
        from midilm.models.gguf import export_gguf, input_embeddings

        for gguf_type in args.gguf_types.split(","):
            t = time.perf_counter()
            path = export_gguf(model_dir, work / f"model-{gguf_type}.gguf", gguf_type)
            notes.append(f"GGUF {gguf_type}: {path.stat().st_size / 2**20:.1f} MiB, converted in "
                         f"{time.perf_counter() - t:.1f} s (once; cached by `midilm generate`)")
            events = export_gguf(model_dir, work / f"model-{gguf_type}-events.gguf", gguf_type, "events")
            notes.append(f"GGUF {gguf_type} events head: {events.stat().st_size / 2**20:.1f} MiB")
            full = LlamaCppDecoder(path, threads=args.threads)
            cut = LlamaCppDecoder(events, threads=args.threads, input_rows=lambda: input_embeddings(model_dir))
            bench_loop(f"llama.cpp {gguf_type}, our loop", full)
            # the events head serves constrained sampling only (unconstrained switches to the full file)
            bench_loop(f"llama.cpp {gguf_type} events head (default), our loop", cut, unconstrained=False)
            if args.agreement:
                greedy = SamplingConfig(max_new_tokens=args.agreement, top_k=1, seed=0)
                ref = sample_music(model, prompt, offset, greedy, grammar).tokens[0]
                for head, decoder in (("full head", full), ("events head", cut)):
                    got = sample_music(decoder, prompt, offset, greedy, grammar).tokens[0]
                    k = first_difference(ref, got)
                    notes.append(f"greedy {gguf_type} {head} vs transformers over {len(ref)} tokens: "
                                 + ("identical" if k is None else f"first difference at token {k}"))
            full.close()
            cut.close()
    if "vllm" in backends:
        from midilm.generate.load import load_model

        vm = load_model(model_dir, backend="vllm")
        stop = vm.tokenizer.eos_token_id if args.model else 1
        for suffix, constrained in (("constrained", True), ("unconstrained", False)):
            cfg = SamplingConfig(max_new_tokens=args.tokens, seed=0, constrained=constrained)
            r, wall, cpu = timed(lambda cfg=cfg: sample_music(vm.model, prompt, offset, cfg, grammar, stop_id=stop),
                                 args.repeat)
            toks = r.tokens[0]
            rows.append((f"vLLM, {suffix}", len(toks), wall, cpu, music_seconds(toks) if constrained else None))

    print(f"model: {name} ({params:.1f}M parameters), {args.threads} thread(s), best of {args.repeat}\n")
    print("| sampler | tokens | wall s | CPU s | tokens/s | s per 2,046 tokens | real-time factor |")
    print("|---|---|---|---|---|---|---|")
    for label, n, wall, cpu, music in rows:
        rtf = f"{music / wall:.1f}" if music else "-"
        print(f"| {label} | {n} | {wall:.2f} | {cpu:.2f} | {n / wall:.0f} | {wall / n * 2046:.2f} | {rtf} |")
    by = {label: (n, wall) for label, n, wall, _, _ in rows}
    print()
    for label in dict.fromkeys(lbl.rsplit(", ", 1)[0] for lbl, *_ in rows if lbl.endswith("unconstrained")):
        (n1, w1), (n2, w2) = by[f"{label}, constrained"], by[f"{label}, unconstrained"]
        print(f"- {label}: constraints cost {(w1 / n1) / (w2 / n2) - 1:+.0%} per token")
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
