"""Generation speed: our constrained sampler against plain `transformers` `generate` on the same model.

    python benchmarks/bench_generate.py [--model DIR] [--tokens 2046] [--threads 1]

Without --model it builds the shipped model's architecture with random weights (speed does not depend
on what the weights learned). Reports tokens per second, seconds for the requested tokens and the
real-time factor (seconds of music per second of compute) for: our sampler with the grammar, our sampler
without it (the cost of the constraints), and `model.generate` sampling with top-p (the baseline).
"""

from __future__ import annotations

import argparse
import time


def random_model(text_vocab: int = 2048, hidden: int = 256, layers: int = 4):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from midilm.models.vocab import MUSIC_ROWS

    cfg = LlamaConfig(vocab_size=text_vocab + MUSIC_ROWS, hidden_size=hidden, intermediate_size=704,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=4096, tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval(), text_vocab


def main() -> None:
    import torch

    from midilm.codecs.amt.vocab import AUTOREGRESS
    from midilm.generate.grammar import GrammarConfig
    from midilm.generate.sampler import SamplingConfig, music_seconds, sample_music

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--tokens", type=int, default=2046)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt", default="A cheerful pop song with piano, bass and drums in C major at 120 bpm.")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.model:
        from midilm.models.midi_llm import load_text_to_midi

        m = load_text_to_midi(args.model)
        model, offset, prompt = m.model, m.layout.music_offset, m.prompt_ids(args.prompt)
        name = args.model
    else:
        model, offset = random_model()
        prompt = [0] + list(range(5, 40)) + [offset + AUTOREGRESS]
        name = "random weights, shipped architecture"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    # a grammar that never runs out of room, so every run makes exactly the requested tokens
    grammar = GrammarConfig(max_notes_per_onset=10_000)
    rows = []
    for label, constrained in (("ours, constrained", True), ("ours, unconstrained", False)):
        cfg = SamplingConfig(max_new_tokens=args.tokens, seed=0, constrained=constrained)
        t = time.perf_counter()
        r = sample_music(model, prompt, offset, cfg, grammar)
        dt = time.perf_counter() - t
        n = len(r.tokens[0])
        rows.append((label, n, dt, music_seconds(r.tokens[0]) if constrained else None))
    with torch.no_grad():
        ids = torch.tensor([prompt])
        t = time.perf_counter()
        out = model.generate(ids, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=True,
                             top_p=0.98, temperature=1.0, pad_token_id=0)
        dt = time.perf_counter() - t
    rows.append(("transformers generate (baseline)", out.shape[1] - ids.shape[1], dt, None))
    print(f"model: {name} ({params:.1f}M parameters), {args.threads} thread(s)\n")
    print("| sampler | tokens | seconds | tokens/s | real-time factor |")
    print("|---|---|---|---|---|")
    for label, n, dt, music in rows:
        rtf = f"{music / dt:.1f}" if music else "-"
        print(f"| {label} | {n} | {dt:.2f} | {n / dt:.0f} | {rtf} |")
    base = rows[2][1] / rows[2][2]
    print(f"\nconstrained vs unconstrained (our loop): {rows[1][2] / rows[1][1] * rows[0][1] / rows[0][2]:.2f}x speed; "
          f"ours constrained vs transformers generate: {rows[0][1] / rows[0][2] / base:.1f}x")


if __name__ == "__main__":
    main()
