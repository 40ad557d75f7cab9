"""Validation loss of text-to-MIDI models on the same fixed examples, whatever their tokenizer.

    python benchmarks/validation_loss.py --data DATASET --models MODEL_DIR [MODEL_DIR ...] [--pieces N]
        [--windows 2] [--json OUT.json]

DATASET is a dataset from `midilm dataset build` (MIDI files read from the rows' paths) or a packed copy
(`midilm.annotate.dataset.pack_for_training`, AMT ids in an `events` column). Examples: for each piece of
the validation split, up to `--windows` windows of 340 events (1,020 ids: the start of the piece, then its
middle), times re-zeroed as in training, after MIDI-LLM's prompt with one caption written from the row's
analysis (seeded per piece, so every model reads the same text). The music windows do not depend on the
prompt's length, so models with different tokenizers are scored on the same music. Loss: cross-entropy
per music token with each target competing only with its own AMT block (time, duration, note, ...), which
is what the recipe trains and what the constrained sampler chooses from; the flag that ends the prompt
is not a target. Model directories may also be Trainer checkpoints (`checkpoint-N`) of a run whose output
folder holds the tokenizer.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

WINDOW_EVENTS = 340


def load_validation(data: str, split: str = "validation", limit: int | None = None) -> list[dict]:
    """Rows of whole pieces with their AMT events (from a packed `events` column or the MIDI file)."""
    from midilm.annotate.dataset import load_rows
    from midilm.codecs.amt.encode import encode_midi
    from midilm.errors import MidilmError

    rows = [r for r in load_rows(data, split) if r.get("unit", "piece") == "piece"]
    rows.sort(key=lambda r: str(r.get("content_hash") or r.get("path")))  # fixed order, any machine
    out = []
    for r in rows:
        if r.get("events") is None:
            try:
                r["events"] = encode_midi(r["path"])
            except (MidilmError, OSError):
                continue
        out.append(r)
        if limit and len(out) >= limit:
            break
    return out


def examples(rows: list[dict], windows: int = 2, seed: int = 0) -> list[tuple[str, list[int], str]]:
    """(caption, AMT ids of one window, source) per window."""
    import numpy as np

    from midilm.annotate.captions import make_caption
    from midilm.codecs.amt import vocab as V

    out = []
    for i, r in enumerate(rows):
        ev = np.asarray(r["events"], dtype=np.int64).reshape(-1, 3)
        if not len(ev):
            continue
        starts = [0] + ([len(ev) // 2] if len(ev) > 2 * WINDOW_EVENTS else [])
        analysis = {k: v for k, v in r.items() if k not in ("captions", "qa", "events")}
        caption = make_caption(analysis, random.Random(seed * 100003 + i), "medium")
        for s in starts[:windows]:
            w = ev[s : s + WINDOW_EVENTS].copy()
            w[:, 0] -= w[0, 0]
            w = w[w[:, 0] < V.MAX_TIME]
            out.append((caption, w.reshape(-1).tolist(), str(r.get("source", ""))))
    return out


def load_model(path: str):
    """A model folder, or a Trainer checkpoint (the bare LM's weights and config) whose tokenizer and
    layout (`midilm.json`) are in a folder above it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from midilm.models.vocab import layout_for

    p = Path(path)
    model = AutoModelForCausalLM.from_pretrained(p, local_files_only=True, use_safetensors=True, dtype=torch.float32)
    home = next(q for q in (p, *p.parents) if (q / "tokenizer.json").exists())
    tokenizer = AutoTokenizer.from_pretrained(home, local_files_only=True)
    layout = layout_for(home, model.config.vocab_size, len(tokenizer))
    model.eval()
    return model, tokenizer, layout


def score(model, tokenizer, layout, exs) -> dict:
    """Mean per-block loss per music token, overall and per source."""
    import torch

    from midilm.codecs.amt import vocab as V
    from midilm.train.t2m import block_loss, loss_blocks

    blocks = loss_blocks(layout)
    weight = model.get_output_embeddings().weight
    total, count = {}, {}
    with torch.no_grad():
        for caption, music, source in exs:
            prompt = tokenizer(layout.prompt_text(caption), add_special_tokens=True)["input_ids"]
            head = prompt + [layout.music_id(V.AUTOREGRESS)]
            ids = head + [layout.music_id(t) for t in music]
            labels = [-100] * len(head) + ids[len(head):]
            x, y = torch.tensor([ids]), torch.tensor([labels])
            hidden = model.get_decoder()(input_ids=x).last_hidden_state
            n = len(music)
            loss = float(block_loss(hidden, weight, y, blocks)) * n
            for key in ("all", source):
                total[key] = total.get(key, 0.0) + loss
                count[key] = count.get(key, 0) + n
    return {k: round(total[k] / count[k], 4) for k in total} | {"tokens": count.get("all", 0)}


def as_program(exs, program: int):
    """The windows with every pitched note moved to `program` and no description (an instrument's pitch
    model alone: how well do its rows predict music they never played?)."""
    from midilm.codecs.amt import vocab as V

    out = []
    for _, music, source in exs:
        m = list(music)
        for i in range(2, len(m), 3):
            note = m[i] - V.NOTE_OFFSET
            if 0 <= note < V.MAX_NOTE and note // V.MAX_PITCH != V.DRUMS:
                m[i] = V.NOTE_OFFSET + program * V.MAX_PITCH + note % V.MAX_PITCH
        if m != list(music):
            out.append(("", m, source))
    return out


def trained_programs(data: str) -> set[int]:
    """Programs with notes in the training split, plus the reassignment pools of the recipe."""
    from midilm.annotate.dataset import family_stats
    from midilm.train.augment import ROLE_POOLS

    stats = family_stats(data, "train")
    seen = {p for f in stats["families"].values() for p in f["programs"]}
    return seen | {p for pool in ROLE_POOLS.values() for p in pool}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--split", default="validation")
    ap.add_argument("--pieces", type=int, default=None, help="at most this many pieces (default: all)")
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--as-programs", default="", help="comma-separated GM programs: also score the windows "
                    "played by each (no description), e.g. untrained ones")
    ap.add_argument("--family-fill", action="store_true", help="also score each model after family_fill of "
                    "the programs the training split and the reassignment pools never play")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = load_validation(args.data, args.split, args.pieces)
    exs = examples(rows, args.windows)
    programs = [int(x) for x in args.as_programs.split(",") if x.strip()]
    variants = [(m, False) for m in args.models] + ([(m, True) for m in args.models] if args.family_fill else [])
    trained = trained_programs(args.data) if args.family_fill else set()
    results = {}
    for path, fill in variants:
        c0 = time.process_time()
        model, tokenizer, layout = load_model(path)
        m = f"{path} + family_fill" if fill else path
        if fill:
            from midilm.models.init_rows import family_fill

            filled = family_fill(model.get_input_embeddings().weight.data, layout.music_offset, trained)
            print(f"{m}: filled {len(filled)} programs", flush=True)
        results[m] = score(model, tokenizer, layout, exs)
        for prog in programs:
            results[m][f"as program {prog}"] = score(model, tokenizer, layout, as_program(exs, prog))["all"]
        print(f"{m}: {args.split} loss {results[m]['all']:.4f} per music token over {results[m]['tokens']} tokens "
              f"({len(rows)} pieces, {len(exs)} windows; {time.process_time() - c0:.0f} CPU s)", flush=True)
        print("    per source: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(results[m].items())
                                          if k not in ("all", "tokens")), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"split": args.split, "pieces": len(rows), "windows": len(exs),
                                               "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
