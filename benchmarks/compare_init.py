"""Initialising the new AMT rows: compare schemes by early loss of the same short stage-2 training.

    python benchmarks/compare_init.py --data /work/data/midilm-dataset -o /work/data/compare-init \
        [--steps 60] [--schemes mean,random,block-mean] [--losses block,full] [--seeds 0,1]

A small Llama text model is trained first on captions of the training split (or given with --base),
then for each scheme the vocabulary is expanded with `expand_vocabulary(init=scheme)` and the same
stage-2 run follows (caption -> music, same data stream, same seed, same steps). Recorded per run: the
training loss every few steps and the loss on a fixed held-out set (validation-split pieces, never trained on)
at fixed steps. Two losses can be compared: the per-block softmax the recipe trains with, and the full
softmax over text + music rows, where the new rows also compete with the text rows. Each seed changes
the new rows' random draw and the data stream (the base model stays). Runs already in the output's
`compare_init.json` are kept, so an interrupted or extended comparison only runs what is missing. Writes
`compare_init.json` and `compare_init.png` in the output folder and prints a Markdown table (mean over
seeds, with the spread).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

EVAL_STEPS = (0, 10, 20, 40, 60, 80, 120, 160)


def train_base(data: str, out: Path, steps: int, seed: int, pieces_limit: int) -> Path:
    """A tiny Llama text model (byte-level BPE of 1,024 ids) trained on training-split captions."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    from midilm.annotate.dataset import load_rows
    from midilm.models.tokenizer import train_text_tokenizer

    if (out / "config.json").exists():
        return out
    texts = [c for row in load_rows(data, "train")[: pieces_limit * 4] for c in (row.get("captions") or [])]
    if not texts:
        raise ValueError(f"no captions in the training split of {data}")
    tok = train_text_tokenizer(texts, 1024)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    ids: list[int] = []
    rng = random.Random(seed)
    rng.shuffle(texts)
    for t in texts:
        ids += tok(t, add_special_tokens=True)["input_ids"] + [tok.eos_token_id]
    rows = [torch.tensor(ids[i : i + 128]) for i in range(0, len(ids) - 128, 128)]
    dataset = [{"input_ids": r, "labels": r} for r in rows]
    args = TrainingArguments(output_dir=str(out / "checkpoints"), max_steps=steps, per_device_train_batch_size=16,
                             learning_rate=2e-3, warmup_steps=steps // 10, lr_scheduler_type="cosine",
                             logging_steps=max(steps // 10, 1), save_strategy="no", report_to=[], seed=seed,
                             use_cpu=True, disable_tqdm=False)
    Trainer(model=model, args=args, train_dataset=dataset).train()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def heldout_batch(data: str, layout, tokenizer, cfg, n: int, seed: int):
    """Fixed stage-2 examples from validation-split pieces (no augmentation, no dropout): the held-out set."""
    import torch

    from midilm.train.t2m import load_pieces, sft_example

    pieces = load_pieces(data, "validation", n)
    plain = type(cfg)(**{**cfg.__dict__, "caption_dropout": 0.0, "p_transpose": 0.0, "p_tempo": 0.0,
                         "p_reassign": 0.0, "p_anticipate": 0.0})
    rng = random.Random(seed)
    rows = []
    for p in pieces:
        ids, labels = sft_example(p, layout, tokenizer, plain, rng)
        ids, labels = ids[: cfg.max_len], labels[: cfg.max_len]
        pad = cfg.max_len - len(ids)
        rows.append((ids + [tokenizer.pad_token_id] * pad, labels + [-100] * pad))
    return torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])


def model_loss(model, ids, labels, blocks) -> float:
    """Loss per music token: per-block softmax when `blocks` is given, else the full softmax."""
    import torch
    import torch.nn.functional as F

    from midilm.train.t2m import block_loss

    total, count = 0.0, 0
    with torch.no_grad():
        weight = model.get_output_embeddings().weight
        for x, y in zip(ids.split(1), labels.split(1)):  # one sequence at a time: full logits are large
            hidden = model.get_decoder()(input_ids=x).last_hidden_state
            n = int((y[:, 1:] != -100).sum())
            if blocks:
                total += float(block_loss(hidden, weight, y, blocks)) * n
            else:
                total += float(F.cross_entropy((hidden[:, :-1] @ weight.T)[0].float(), y[0, 1:], ignore_index=-100,
                                               reduction="sum"))
            count += n
    return total / max(count, 1)


def run_scheme(base: Path, scheme: str, loss: str, seed: int, pieces, heldout_pieces_n: int, args, out: Path) -> dict:
    import torch
    from transformers import TrainerCallback, TrainingArguments

    from midilm.train.t2m import (
        PackedStream,
        T2MConfig,
        _collate,
        _iterable,
        _trainer_class,
        build_model,
        loss_blocks,
        sft_example,
    )

    cfg = T2MConfig(data=args.data, output=str(out), init_from=str(base), init_scheme=scheme, max_len=args.max_len,
                    batch_size=args.batch_size, lr=args.lr, seed=seed, block_loss=loss == "block")
    model, tokenizer, layout = build_model(cfg, [])
    blocks = loss_blocks(layout) if loss == "block" else None
    # the held-out set is the same for every run
    ids, labels = heldout_batch(args.data, layout, tokenizer, cfg, heldout_pieces_n, 0)
    heldout: list[tuple[int, float]] = []

    class Heldout(TrainerCallback):
        def on_step_end(self, _args, state, control, model=None, **kw):
            if state.global_step in EVAL_STEPS or state.global_step == args.steps:
                model.eval()
                heldout.append((state.global_step, model_loss(model, ids, labels, blocks)))
                model.train()

    model.eval()
    heldout.append((0, model_loss(model, ids, labels, blocks)))
    model.train()
    stream = PackedStream(lambda r: sft_example(r.choice(pieces), layout, tokenizer, cfg, r), cfg.max_len,
                          tokenizer.pad_token_id, seed + 1)
    targs = TrainingArguments(
        output_dir=str(out / "checkpoints"), max_steps=args.steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr, warmup_steps=max(args.steps // 20, 1), lr_scheduler_type="cosine",
        logging_steps=args.log_every, save_strategy="no", report_to=[], seed=seed, dataloader_num_workers=0,
        remove_unused_columns=False, use_cpu=True, disable_tqdm=False)
    trainer = _trainer_class(layout, cfg.block_loss)(model=model, args=targs, train_dataset=_iterable(stream),
                                                      data_collator=_collate, callbacks=[Heldout()])
    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(seed)
    trainer.train()
    train = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
    return {"scheme": scheme, "loss": loss, "seed": seed, "train": train, "heldout": heldout,
            "wall_seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1)}


def mean_curves(runs: list[dict], key: str) -> dict[tuple[str, str], list[tuple[int, float, float]]]:
    """(loss, scheme) -> [(step, mean over seeds, half the spread)] at the steps every seed has."""
    import numpy as np

    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["loss"], r["scheme"]), []).append(dict(r[key]))
    out = {}
    for name, curves in groups.items():
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        vals = [np.array([c[s] for c in curves]) for s in steps]
        out[name] = [(s, float(v.mean()), float(v.max() - v.min()) / 2) for s, v in zip(steps, vals)]
    return out


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, held = mean_curves(runs, "train"), mean_curves(runs, "heldout")
    losses = list(dict.fromkeys(r["loss"] for r in runs))
    fig, axes = plt.subplots(1, len(losses), figsize=(6 * len(losses), 4), squeeze=False)
    for ax, loss in zip(axes[0], losses):
        for k, scheme in enumerate(dict.fromkeys(r["scheme"] for r in runs if r["loss"] == loss)):
            color = f"C{k}"
            steps, mean, _ = zip(*train[loss, scheme])
            ax.plot(steps, mean, color=color, alpha=0.45, label=f"{scheme} (training)")
            steps, mean, spread = zip(*held[loss, scheme])
            ax.errorbar(steps, mean, yerr=spread, fmt="o-", color=color, capsize=3, label=f"{scheme} (held-out)")
        ax.set_title(f"{loss} softmax")
        ax.set_xlabel("stage-2 step")
        ax.set_ylabel("loss (nats per music token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    seeds = len({r.get("seed", 0) for r in runs})
    fig.suptitle(f"Initialising the AMT rows: early stage-2 loss (mean of {seeds} seed(s), bars: spread)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(runs: list[dict]) -> str:
    held, train = mean_curves(runs, "heldout"), mean_curves(runs, "train")
    steps = sorted({s for curve in held.values() for s, _, _ in curve})
    lines = ["| loss | scheme | " + " | ".join(f"held-out @{s}" for s in steps) + " | training, last logged |",
             "|---|---|" + "---|" * len(steps) + "---|"]
    for (loss, scheme), curve in held.items():
        at = {s: (m, d) for s, m, d in curve}
        cells = " | ".join(f"{at[s][0]:.3f} ± {at[s][1]:.3f}" if s in at else "-" for s in steps)
        last = train[loss, scheme][-1]
        lines.append(f"| {loss} | {scheme} | {cells} | {last[1]:.3f} @{last[0]} |")
    return "\n".join(lines)


def main() -> None:
    import torch

    from midilm.train.t2m import load_pieces

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a dataset built by `midilm dataset build`")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--base", default=None, help="a local Llama text model (default: train a tiny one)")
    ap.add_argument("--base-steps", type=int, default=150)
    ap.add_argument("--schemes", default="mean,random,block-mean")
    ap.add_argument("--losses", default="block,full")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--pieces", type=int, default=400, help="training pieces to draw stage-2 examples from")
    ap.add_argument("--heldout", type=int, default=16, help="validation-split pieces in the held-out set")
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--seeds", default="0", help="comma-separated; the base model uses the first")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(x) for x in args.seeds.split(",")]
    c0 = time.process_time()
    base = Path(args.base) if args.base else train_base(args.data, out / "base", args.base_steps, seeds[0],
                                                         args.pieces)
    record = out / "compare_init.json"
    done = json.loads(record.read_text()) if record.exists() else {}
    runs = [dict(r, seed=r.get("seed", 0)) for r in done.get("runs", [])]
    cpu_before = float(done.get("cpu_seconds_total", 0.0))
    pieces = None
    for seed in seeds:
        for loss in args.losses.split(","):
            for scheme in args.schemes.split(","):
                if any((r["loss"], r["scheme"], r["seed"]) == (loss, scheme, seed) for r in runs):
                    continue
                print(f"--- {scheme} init, {loss} softmax, seed {seed}", flush=True)
                pieces = pieces or load_pieces(args.data, "train", args.pieces)
                runs.append(run_scheme(base, scheme, loss, seed, pieces, args.heldout, args,
                                       out / f"{loss}-{scheme}-{seed}"))
                record.write_text(json.dumps({"args": vars(args), "runs": runs, "cpu_seconds_total": cpu_before},
                                             indent=1) + "\n")
    runs = [r for r in runs if r["seed"] in seeds and r["loss"] in args.losses.split(",")
            and r["scheme"] in args.schemes.split(",")]
    plot(runs, out / "compare_init.png")
    summary = {"args": vars(args), "base": str(base),
               "cpu_seconds_total": round(cpu_before + time.process_time() - c0, 1), "runs": runs}
    record.write_text(json.dumps(summary, indent=1) + "\n")
    print(table(runs))
    print(f"\nCPU time, all runs (this and earlier invocations): {summary['cpu_seconds_total']:.0f} s; wrote "
          f"{record} and {out / 'compare_init.png'}")


if __name__ == "__main__":
    main()
