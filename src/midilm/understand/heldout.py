"""Factual accuracy of an understanding model on a dataset's held-out split, per question type.

Every test row (pieces and 20 s clips, cut as in training) gets each type's first canonical question
(`annotate.questions.QUESTIONS[type][0]`, e.g. "What key is this piece in?"); the answer is scored with
`annotate.questions.answer_is_correct` against the row's own analysis. A majority baseline (the train
split's most common value, answered for every row) is reported beside each type.

    python -m midilm.understand.heldout --data /work/data/midilm-dataset --types key,mode,meter
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

BASELINE_COLUMNS = {"key": "key", "mode": "mode", "meter": "time_signature", "texture": "texture",
                    "tempo": "tempo_word", "dynamics": "dynamics"}


def heldout_accuracy(model, data: str | Path, types: list[str], limit: int | None = None, seed: int = 0,
                     cache_dir: Path | None = None) -> dict:
    """{type: {"accuracy", "n", "baseline"}} plus timing; rows without a readable file are skipped."""
    import random

    from midilm.annotate.dataset import load_rows
    from midilm.annotate.questions import QUESTIONS, answer_is_correct
    from midilm.models.notes import row_notes

    rows = load_rows(data, "test")
    if limit and len(rows) > limit:
        rows = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), limit))]
    notes = row_notes(rows, cache_dir, progress=False)
    keep = [i for i, n in enumerate(notes) if n is not None]
    rows, notes = [rows[i] for i in keep], [notes[i] for i in keep]
    baselines = majority_baselines(data, rows, types)
    result: dict = {"rows": len(rows), "model": getattr(model, "path", None)}
    t0 = time.time()
    # row-major pairs: a batch asks one piece several questions and encodes it once
    pairs = [(n, QUESTIONS[t][0]) for n in notes for t in types]
    answers = model.ask_many([n for n, _ in pairs], [q for _, q in pairs], max_new_tokens=48)
    for j, qtype in enumerate(types):
        got = answers[j :: len(types)]
        right = [answer_is_correct(qtype, a, r) for a, r in zip(got, rows)]
        by_unit = {u: [ok for ok, r in zip(right, rows) if r["unit"] == u] for u in ("piece", "clip")}
        result[qtype] = {
            "accuracy": round(sum(right) / max(len(rows), 1), 4), "n": len(rows),
            "by_unit": {u: round(sum(v) / len(v), 4) for u, v in by_unit.items() if v},
            "majority_baseline": baselines.get(qtype),
            "examples": [{"question": QUESTIONS[qtype][0], "answer": a, "correct": ok}
                         for a, ok in list(zip(got, right))[:5]],
        }
    result["seconds"] = round(time.time() - t0, 1)
    return result


def majority_baselines(data: str | Path, rows: list[dict], types: list[str]) -> dict:
    """Accuracy of always answering the train split's most common value of a type's column."""
    import pyarrow.parquet as pq

    from midilm.annotate.questions import answer_is_correct

    out = {}
    cols = [BASELINE_COLUMNS[t] for t in types if t in BASELINE_COLUMNS]
    if not cols:
        return out
    table = pq.read_table(Path(data) / "train.parquet", columns=sorted(set(cols)))
    for qtype in types:
        col = BASELINE_COLUMNS.get(qtype)
        if not col:
            continue
        value = Counter(v for v in table.column(col).to_pylist() if v).most_common(1)[0][0]
        answer = str(value)
        out[qtype] = {"answer": answer,
                      "accuracy": round(sum(answer_is_correct(qtype, answer, r) for r in rows) / max(len(rows), 1), 4)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m midilm.understand.heldout", description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model directory (default: the shipped one)")
    p.add_argument("--data", required=True, help="dataset folder with test.parquet")
    p.add_argument("--types", default="key", help="comma-separated question types (default key)")
    p.add_argument("--limit", type=int, default=None, help="a random subset of the test rows")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", default=None, help="cache the test rows' notes here (default: no cache)")
    p.add_argument("--json", default=None, metavar="OUT.json")
    args = p.parse_args(argv)
    import torch

    from midilm.understand.model import load_understanding_model

    torch.set_num_threads(args.threads)
    model = load_understanding_model(args.model)
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    res = heldout_accuracy(model, args.data, types, args.limit,
                           cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    text = json.dumps(res, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
