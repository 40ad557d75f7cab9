"""Cost of each steering control per token, as a ratio against sampling without it.

    python benchmarks/bench_steering.py [--model DIR] [--tokens 1024] [--repeat 2] [--threads 1]

The shipped model on the transformers backend, one prompt, the same seed for every run, through the one
engine (`engine.run_rows`) with the steering processor `midilm generate` installs. Each control runs
alone (melodic steps also on the key prior they sit on; the instrument balance with three instruments asked
for; the established key, which only runs without a
key, alone and in the default for the same prompt with its key left out), then all the biases together (the
default), then CFG (scale 1.5) alone and with the biases; CFG adds the unconditioned prompt as a second row of
the batch.
Reported: CPU seconds of this process per token (the machine is shared: CPU time is the steadier figure)
and the ratio to the run without steering. A second table times the bias functions alone per call, model
aside (melodic steps including the look-back over the row's ids; the established key's tracker over a whole
history at once and per note slot as it runs).
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

    from midilm.codecs.amt.vocab import DUR_OFFSET, NOTE_OFFSET, REST
    from midilm.generate.engine import Row, run_rows
    from midilm.generate.grammar import GrammarConfig
    from midilm.generate.sampler import MusicSequence, SamplingConfig
    from midilm.generate.steering import (
        KeyTracker,
        SteeringConfig,
        balance_bias,
        cfg_mix,
        derive_steering,
        instrument_counts,
        melody_context,
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
    ap.add_argument("--steps", type=float, default=3.0, help="melodic-steps strength of its own rows")
    ap.add_argument("--sustain", type=float, default=1.0, help="sustain strength of its own row")
    ap.add_argument("--established", type=float, default=3.0, help="established-key strength of its own rows")
    ap.add_argument("--balance", type=float, default=4.0, help="instrument-balance strength of its own row")
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
        (f"melodic steps ({args.steps:g}) alone", SteeringConfig(key=full.key, step_strength=args.steps)),
        (f"key prior + melodic steps ({args.steps:g})", SteeringConfig(key=full.key, key_strength=full.key_strength,
                                                                      step_strength=args.steps)),
        (f"sustain ({args.sustain:g}) alone", SteeringConfig(bpm=80, sustain_strength=args.sustain)),
        ("the default (" + " + ".join(name for name, on in (("key", full.key_on), ("grid", full.grid_on),
                                                           ("gap", full.gap_on), ("steps", full.steps_on),
                                                           ("sustain", full.sustain_on)) if on) + ")",
         SteeringConfig(**{**full.__dict__, "cfg_scale": 1.0})),
        (f"established key ({args.established:g}) alone", SteeringConfig(established_strength=args.established)),
        (f"the default without a key (grid + gap + established key {args.established:g})",
         derive_steering("A calm piano piece at 80 bpm.", bpm=80, established_strength=args.established)),
        (f"instrument balance ({args.balance:g}) alone, piano + bass + drums asked for",
         SteeringConfig(balance_strength=args.balance, instruments=(0, 33, 128))),
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
    # a row's ids at a note slot: 500 events of a piano and a bass, the last one's time and duration
    rng_ids = np.random.default_rng(1)
    events = [[t, DUR_OFFSET + 20, NOTE_OFFSET + inst * 128 + int(rng_ids.integers(40, 80))]
              for t in range(0, 5000, 10) for inst in (0, 33)]
    ids = [i for e in events for i in e] + [5000, DUR_OFFSET + 20]
    steps = SteeringConfig(key=(0, "major"), key_strength=2.0, step_strength=3.0, bpm=80)
    t = time.process_time()
    for _ in range(calls):
        steer_logits(note_row, NOTE_OFFSET, 5000, steps, melody_context(ids, 5000))
    steps_us = (time.process_time() - t) / calls * 1e6
    sustain = SteeringConfig(bpm=80, sustain_strength=2.0)
    dur_row = rng.normal(size=NOTE_OFFSET - DUR_OFFSET - 1).astype(np.float32)
    t = time.process_time()
    for _ in range(calls):
        steer_logits(dur_row, DUR_OFFSET + 1, 3000, sustain)
    sustain_us = (time.process_time() - t) / calls * 1e6
    established = SteeringConfig(established_strength=3.0)
    t = time.process_time()
    for _ in range(calls):
        tracker = KeyTracker()
        tracker.update(ids)
    history_us = (time.process_time() - t) / calls * 1e6
    # as it runs: each note slot walks one new event, then the scale prior applies
    t = time.process_time()
    tracker, view = KeyTracker(), np.asarray(ids)
    for k in range(calls):  # the k-th note slot of a history of 1,000 events (the tracker starts over at 1,000)
        key = tracker.update(view[: 3 * (k % 1000 + 1) + 2])
        steer_logits(note_row, NOTE_OFFSET, 5000, established, established=key)
    running_us = (time.process_time() - t) / calls * 1e6
    balance = SteeringConfig(balance_strength=4.0, instruments=(0, 33, 128))
    t = time.process_time()
    for _ in range(calls):
        steer_logits(note_row, NOTE_OFFSET, 5000, balance, balance=balance_bias(instrument_counts(ids), balance))
    balance_us = (time.process_time() - t) / calls * 1e6
    micro = [("key prior + melodic steps, note block (context from 1,000 events)", steps_us),
             ("instrument balance: counts over the last 64 events + bias, note block", balance_us),
             ("sustain, duration block (999 ids)", sustain_us),
             ("established key: tracker over a 1,000-event history from scratch", history_us),
             ("established key: tracker (one new event) + scale prior, note block", running_us)]
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
