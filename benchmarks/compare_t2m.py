"""Text-to-MIDI body sizes and row initialisations at equal CPU time, judged by validation loss.

    python benchmarks/compare_t2m.py --data DATASET -o OUT --cpu-seconds 240 \
        --runs "s192x3:192,3,3,1,512,block-mean;s256x4:256,4,4,2,704,block-mean;s384x6:384,6,6,2,1024,block-mean"

Each run is `name:hidden,layers,heads,kv_heads,intermediate,scheme`. It builds the recipe's model from
scratch (a small Llama over the recipe's 2,048-id BPE text vocabulary, trained once on the training
captions and shared by all runs), appends the AMT rows with `expand_vocabulary(init=scheme)` ("random" is
exactly the from-scratch default: every row N(0, 0.02)), and trains stage 2 of the recipe (caption ->
music, loss on the music only, per-block softmax, the recipe's augmentations and caption dropout) with
AdamW at a constant learning rate after a short warm-up, on one thread, until the process has spent
`--cpu-seconds` of CPU time on training. Process CPU time, not wall time, because the machine is shared.
The validation loss (fixed examples from validation-split pieces, no augmentation, per music token) is
measured at fixed CPU times on the windows of benchmarks/validation_loss.py (the same music whatever the
tokenizer); its own CPU time is not counted. Scheme "warm:DIR" continues a trained model instead (its
own tokenizer and sizes; the size fields are then only labels). Tokens per second are packed training tokens
per CPU second. Results go to OUT/compare_t2m.json (runs already there are kept: a comparison can be
extended) and OUT/compare_t2m.png, and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path


def load_any(data: str, split: str, limit: int | None = None):
    """Pieces of a dataset (MIDI read from the rows' paths) or of a packed copy (an `events` column)."""
    from midilm.annotate.dataset import load_rows
    from midilm.train.t2m import Piece, load_pieces

    if not (Path(data) / "summary.json").exists() or "packed_from" not in json.loads(
            (Path(data) / "summary.json").read_text()):
        return load_pieces(data, split, limit)
    pieces = []
    for row in load_rows(data, split)[:limit]:
        analysis = {k: v for k, v in row.items() if k not in ("captions", "qa", "events")}
        pieces.append(Piece([int(x) for x in row["events"]], analysis, list(row.get("captions") or []),
                            row.get("source", "")))
    return pieces


def parse_runs(spec: str) -> list[dict]:
    runs = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, _, values = part.partition(":")
        h, n_layers, heads, kv, inter, scheme = values.split(",")
        runs.append({"name": name, "hidden": int(h), "layers": int(n_layers), "heads": int(heads),
                     "kv_heads": int(kv), "intermediate": int(inter), "scheme": scheme})
    return runs


def validation_examples(pieces):
    """The fixed validation windows of benchmarks/validation_loss.py: the same music for any tokenizer."""
    import validation_loss as VL

    rows = [{**p.analysis, "events": p.events, "source": p.source} for p in pieces]
    return VL.examples(rows)


def validation_loss(model, tokenizer, layout, exs) -> float:
    """Per-block cross-entropy per music token over the fixed validation windows."""
    import validation_loss as VL

    model.eval()
    loss = VL.score(model, tokenizer, layout, exs)["all"]
    model.train()
    return loss


def build(run: dict, tokenizer, seed: int):
    """(model, tokenizer, layout): a from-scratch Llama expanded with `scheme`, or with scheme "warm:DIR"
    a trained text-to-MIDI model (and its own tokenizer) to continue from."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from midilm.models.vocab import expand_vocabulary, layout_for

    torch.manual_seed(seed)
    if run["scheme"].startswith("warm:"):
        home = run["scheme"].removeprefix("warm:")
        model = AutoModelForCausalLM.from_pretrained(home, local_files_only=True, use_safetensors=True,
                                                     dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(home, local_files_only=True)
        return model, tok, layout_for(home, model.config.vocab_size, len(tok))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=run["hidden"], intermediate_size=run["intermediate"],
                         num_hidden_layers=run["layers"], num_attention_heads=run["heads"],
                         num_key_value_heads=run["kv_heads"], max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, rope_theta=10000.0)
    model = LlamaForCausalLM(config)
    layout = expand_vocabulary(model, len(tokenizer), init=run["scheme"], seed=seed)
    return model, tokenizer, layout


def train_run(run: dict, args, tokenizer, pieces, val_pieces) -> dict:
    import torch

    from midilm.train.t2m import PackedStream, T2MConfig, block_loss, loss_blocks, sft_example

    model, tokenizer, layout = build(run, tokenizer, args.seed)
    cfg = T2MConfig(data=args.data, output="", max_len=args.max_len, batch_size=args.batch_size, lr=args.lr,
                    seed=args.seed)
    blocks = loss_blocks(layout)
    val = validation_examples(val_pieces)
    n_params = sum(p.numel() for p in model.parameters())
    body = n_params - model.get_input_embeddings().weight.numel()
    stream = iter(PackedStream(lambda r: sft_example(r.choice(pieces), layout, tokenizer, cfg, r), cfg.max_len,
                               tokenizer.pad_token_id, args.seed + 1))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    marks = [args.cpu_seconds * k / args.evals for k in range(1, args.evals + 1)]
    curve = [(0.0, 0, validation_loss(model, tokenizer, layout, val))]
    print(f"--- {run['name']}: {n_params / 1e6:.1f} M parameters ({body / 1e6:.2f} M body), "
          f"validation loss {curve[0][2]:.3f} at start", flush=True)
    spent, tokens, step, train_losses = 0.0, 0, 0, []
    while marks:
        c0 = time.process_time()
        batch = [next(stream) for _ in range(cfg.batch_size)]
        x = torch.stack([b["input_ids"] for b in batch])
        y = torch.stack([b["labels"] for b in batch])
        # packed rows restart their positions at each example (no attention across examples)
        pos = torch.stack([b["position_ids"] for b in batch]) if "position_ids" in batch[0] else None
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
        hidden = model.get_decoder()(input_ids=x, position_ids=pos).last_hidden_state
        loss = block_loss(hidden, model.get_output_embeddings().weight, y, blocks)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        spent += time.process_time() - c0
        tokens += x.numel()
        step += 1
        train_losses.append((round(spent, 1), step, float(loss.detach())))
        if spent >= marks[0]:
            marks.pop(0)
            curve.append((round(spent, 1), tokens, validation_loss(model, tokenizer, layout, val)))
            print(f"    {spent:7.1f} CPU s  step {step:5d}  {tokens / spent:7.0f} tokens/s  "
                  f"train {float(loss.detach()):.3f}  validation {curve[-1][2]:.3f}", flush=True)
    return {**run, "params": n_params, "body_params": body, "steps": step, "tokens": tokens,
            "cpu_seconds": round(spent, 1), "tokens_per_cpu_second": round(tokens / spent, 1),
            "validation": curve, "train": train_losses[:: max(1, len(train_losses) // 200)]}


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for k, r in enumerate(runs):
        xs, _, ys = zip(*r["validation"])
        ax.plot([x / 60 for x in xs], ys, "o-", color=f"C{k}", ms=3,
                label=f"{r['name']} ({r['tokens_per_cpu_second']:.0f} tok/CPU s)")
    ax.set_xlabel("training CPU minutes (one thread)")
    ax.set_ylabel("validation loss (nats per music token)")
    ax.set_title("stage 2 at equal CPU time")
    lows = [min(y for _, _, y in r["validation"][1:]) for r in runs if len(r["validation"]) > 1]
    if lows:
        ax.set_ylim(min(lows) - 0.2, min(lows) + 2.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def table(runs: list[dict]) -> str:
    lines = ["| run | hidden x layers | init | parameters (body) | tokens / CPU s | steps | "
             "validation loss at start | half budget | full budget |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        v = r["validation"]
        mid = v[math.ceil((len(v) - 1) / 2)][2]
        lines.append(f"| {r['name']} | {r['hidden']} x {r['layers']} | {r['scheme']} | {r['params'] / 1e6:.1f} M "
                     f"({r['body_params'] / 1e6:.2f} M) | {r['tokens_per_cpu_second']:.0f} | {r['steps']} | "
                     f"{v[0][2]:.3f} | {mid:.3f} | {v[-1][2]:.3f} |")
    return "\n".join(lines)


def main() -> None:
    import torch

    from midilm.annotate.dataset import load_rows
    from midilm.models.tokenizer import train_text_tokenizer
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--runs", required=True, help="name:hidden,layers,heads,kv_heads,intermediate,scheme;...")
    ap.add_argument("--cpu-seconds", type=float, default=240.0)
    ap.add_argument("--evals", type=int, default=4, help="validation measurements over the budget")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--pieces", type=int, default=0, help="training pieces to draw from (0: all)")
    ap.add_argument("--validation", type=int, default=24, help="validation pieces in the fixed set")
    ap.add_argument("--text-vocab", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    record = out / "compare_t2m.json"
    done = json.loads(record.read_text())["runs"] if record.exists() else []
    todo = [r for r in parse_runs(args.runs) if r["name"] not in {d["name"] for d in done}]
    if todo:
        pieces = load_any(args.data, "train", args.pieces or None)
        val_all = load_any(args.data, "validation")
        val_pieces = random.Random(0).sample(val_all, min(args.validation, len(val_all)))
        texts = [c for r in load_rows(args.data, "train") for c in (r.get("captions") or [])]
        tokenizer = train_text_tokenizer(texts, args.text_vocab)
        for run in todo:
            done.append(train_run(run, args, tokenizer, pieces, val_pieces))
            record.write_text(json.dumps({"args": vars(args), "runs": done}, indent=1) + "\n")
    wanted = [r["name"] for r in parse_runs(args.runs)]
    runs = [r for r in done if r["name"] in wanted]
    plot(runs, out / "compare_t2m.png")
    print(table(runs))


if __name__ == "__main__":
    main()
