"""Cost of each steering control per token, as a ratio against sampling without it.

    python benchmarks/bench_steering.py [--model DIR] [--tokens 1024] [--repeat 2] [--threads 1]

The shipped model on the transformers backend, one prompt, the same seed for every run, through the one
engine (`engine.run_rows`) with the steering processor `midilm generate` installs. Each control runs
alone, then all the biases together (the default), then CFG (scale 1.5) alone and with the biases; CFG
adds the unconditioned prompt as a second row of the batch. Reported: CPU seconds of this process per
token (the machine is shared: CPU time is the steadier figure) and the ratio to the run without
steering. A second table times the bias functions alone per call, model aside.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def timed(fn, repeat: int):
    best = None
    for _ in range(repeat):
        c = time.process_time()
        out = fn()
        cpu = time.process_time() - c
        if best is None or cpu < best[1]:
            best = (out, cpu)
    return best


def main() -> None:
    import torch

    from midilm.codecs.amt.vocab import NOTE_OFFSET, REST
    from midilm.generate.engine import Row, run_rows
    from midilm.generate.grammar import GrammarConfig
    from midilm.generate.sampler import MusicSequence, SamplingConfig
    from midilm.generate.steering import (
        SteeringConfig,
        cfg_mix,
        derive_steering,
        steer_logits,
        steering_processor,
    )
    from midilm.models.midi_llm import load_text_to_midi

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_model = Path(__file__).resolve().parents[1] / "src/midilm/data/models/midilm-t2m-tiny"
    ap.add_argument("--model", default=str(default_model))
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt", default="A calm piano piece in C major at 80 bpm.")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m = load_text_to_midi(args.model)
    offset = m.layout.music_offset
    prompt, uncond_prompt = m.prompt_ids(args.prompt), m.prompt_ids(None)
    full = derive_steering(args.prompt, bpm=80)  # the prompt names 80 bpm
    variants = [
        ("no steering (baseline)", SteeringConfig()),
        (f"key prior ({full.key_strength:g})", SteeringConfig(key=full.key, key_strength=full.key_strength)),
        (f"beat grid ({full.grid_strength:g})", SteeringConfig(bpm=80, grid_strength=full.grid_strength)),
        (f"gap penalty ({full.gap_strength:g} per beat past {full.max_gap_beats:g})",
         SteeringConfig(bpm=80, gap_strength=full.gap_strength, max_gap_beats=full.max_gap_beats)),
        ("key + grid + gap (the default)", SteeringConfig(**{**full.__dict__, "cfg_scale": 1.0})),
        ("CFG 1.5 alone", SteeringConfig(cfg_scale=1.5)),
        ("default + CFG 1.5", SteeringConfig(**{**full.__dict__, "cfg_scale": 1.5})),
    ]
    # a grammar that never runs out of room, so every run makes exactly the requested tokens
    grammar = GrammarConfig(max_notes_per_onset=10_000)
    sampling = SamplingConfig(max_new_tokens=args.tokens, seed=0)

    def run(config: SteeringConfig) -> int:
        row = Row(prompt, MusicSequence(grammar, max_new_tokens=args.tokens), sampling, 0,
                  processors=[steering_processor(config)] if config.active else (),
                  uncond_prompt=uncond_prompt if config.cfg_scale != 1.0 else None)
        run_rows(m.model, [row], offset)
        return len(row.tokens)

    rows = []
    for label, config in variants:
        n, cpu = timed(lambda c=config: run(c), args.repeat)
        rows.append((label, n, cpu))
    base = rows[0][2] / rows[0][1]
    print(f"\nmodel {args.model}, transformers backend, {args.threads} thread(s), prompt {args.prompt!r}, "
          f"{args.tokens} tokens, fastest of {args.repeat}\n")
    print("| steering | tokens | CPU s | ms / token | ratio to no steering |")
    print("|---|---|---|---|---|")
    for label, n, cpu in rows:
        print(f"| {label} | {n} | {cpu:.2f} | {1000 * cpu / n:.3f} | {cpu / n / base:.3f} |")

    # the bias functions alone, per call
    rng = np.random.default_rng(0)
    time_row, note_row = rng.normal(size=401).astype(np.float32), rng.normal(size=REST - NOTE_OFFSET).astype(np.float32)
    calls = 2000
    micro = []
    for label, config, row, lo in (
        ("key prior, note block (16,512 ids)", SteeringConfig(key=(0, "major"), key_strength=2.0), note_row,
         NOTE_OFFSET),
        ("grid + gap, time block (401 ids)", SteeringConfig(bpm=80, grid_strength=1.5, gap_strength=1.0), time_row,
         3000),
        ("CFG mix, note block", None, note_row, None),
    ):
        t = time.process_time()
        for _ in range(calls):
            if config is None:
                cfg_mix(row, note_row[::-1], 1.5)
            else:
                steer_logits(row, lo, 3000, config)
        micro.append((label, (time.process_time() - t) / calls * 1e6))
    print("\n| bias function | microseconds per call |")
    print("|---|---|")
    for label, us in micro:
        print(f"| {label} | {us:.1f} |")


if __name__ == "__main__":
    main()
