"""Evaluate a MIDI-understanding model on a dataset split: captioning and question answering, scored with
MIDI-LLaMA's text metrics (BLEU-4, METEOR, ROUGE-L, BERTScore) and with factual accuracy per question type.

A model is anything with `describe_many(pieces) -> list[str]` and `ask_many(pieces, questions) -> list[str]`
(`midilm.understand.load_understanding_model`). `AnalysisAnswerer` (from `midilm.understand.analysis`) is the
ceiling to compare it with: it analyses the notes it is given with `midilm.annotate.analyze` and answers from
that analysis through the dataset's own answer templates, so it is right exactly as often as the analysis of
the clip agrees with the analysis the dataset was built from; it knows no metadata (title, composer, genre)
that is not in the notes.
`PriorAnswerer` is the floor: it never looks at the notes and gives each question type's most common answer
in the training split.

Captions are also read for the facts they state (`midilm.evaluate.caption_facts`): caption factual precision
(the share of stated key, mode, tempo, meter, instrument, texture and dynamics facts that agree with the
row) and caption length in words, per model in `summary.caption_facts` and per caption in the predictions.

Clip rows (`clip_start`/`clip_end` seconds) are evaluated on the notes starting inside the window, moved to
start at the bar holding the window's start (`Piece.excerpt`). Truth for factual accuracy is the row itself
(the dataset's analysis), checked with `midilm.annotate.questions.answer_is_correct`.
"""

from __future__ import annotations

import json
import random
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

# The analysis answerer lives with the understanding models (midilm describe/ask --model analysis use it);
# these names stay importable from here.
from midilm.understand.analysis import (  # noqa: F401
    CAPTION_TYPE,
    UNKNOWN,
    AnalysisAnswerer,
    long_form,
    question_type,
)

# question types whose answers say which facts a model read from the notes (reported first)
CORE_TYPES = ("key", "mode", "tempo", "tempo_word", "meter", "instruments", "texture", "drums", "dynamics",
              "duration", "chords", "pitch_range", "articulation", "modulation")


class PriorAnswerer:
    """The blind baseline: ignores the notes and gives, for each question type and answer style, the answer
    most often found in the training split (and its most common caption). What it scores is what the text
    metrics and the accuracy reward without any listening."""

    name = "prior"

    def __init__(self, dataset_dir: str | Path, split: str = "train"):
        from collections import Counter

        import pyarrow.parquet as pq

        path = Path(dataset_dir) / f"{split}.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"the prior answerer needs {path}")
        table = pq.read_table(path, columns=["qa", "captions"])
        answers: Counter = Counter()
        captions: Counter = Counter()
        for qa, caps in zip(table.column("qa").to_pylist(), table.column("captions").to_pylist()):
            answers.update((q["type"], q["style"], q["answer"]) for q in qa or [])
            captions.update(caps or [])
        self.answers: dict[tuple[str, str], str] = {}
        for (qtype, style, answer), _ in answers.most_common():
            self.answers.setdefault((qtype, style), answer)
            self.answers.setdefault((qtype, ""), answer)
        self.caption = captions.most_common(1)[0][0] if captions else UNKNOWN

    def describe(self, piece) -> str:
        return self.caption

    def ask(self, piece, question: str, history: Sequence | None = None) -> str:
        qtype = question_type(question)
        if qtype == CAPTION_TYPE:
            return self.caption
        style = "long" if long_form(question) else "short"
        return self.answers.get((qtype, style)) or self.answers.get((qtype, "")) or UNKNOWN

    def describe_many(self, pieces: Sequence) -> list[str]:
        return [self.caption for _ in pieces]

    def ask_many(self, pieces: Sequence, questions: Sequence[str]) -> list[str]:
        return [self.ask(None, q) for q in questions]


def load_answerer(model: str | None, dataset_dir: str | Path | None = None):
    """`analysis` -> AnalysisAnswerer; `prior` -> PriorAnswerer (from the dataset's training split); a path or
    None (the shipped default) -> the understanding model."""
    if model == "analysis":
        return AnalysisAnswerer()
    if model == "prior":
        if dataset_dir is None:
            raise ValueError("--model prior needs the dataset (its training split)")
        return PriorAnswerer(dataset_dir)
    try:
        from midilm.understand import load_understanding_model
    except ImportError as e:
        raise FileNotFoundError(
            f"no understanding model is available in this install ({e}); pass --model analysis for the "
            "analysis answerer") from None
    if model is not None and not Path(model).is_dir():
        raise FileNotFoundError(f"model directory not found: {model}")
    try:
        return load_understanding_model(model)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; --model analysis evaluates the analysis answerer instead") from None


def select_rows(rows: list[dict], limit: int | None, seed: int = 0) -> list[dict]:
    """A seeded sample of rows (all when limit is None), pieces and clips alike, in a stable order."""
    if limit is None or limit >= len(rows):
        return list(rows)
    picked = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in picked]


def row_piece(row: dict):
    """The notes the row describes: the whole file, or the clip moved to start at its bar."""
    from midilm.music.midi_io import read_midi

    piece = read_midi(str(row["path"]))
    if row.get("unit") == "clip" and row.get("clip_end") is not None:
        piece = piece.excerpt(float(row["clip_start"]), float(row["clip_end"]))
    return piece


def evaluate_understanding(answerer, rows: list[dict], out_dir: str | Path, bertscore_model: str | Path | None = None,
                           qa_per_row: int | None = None, progress: bool = True, skip_metrics: Sequence[str] = (),
                           batch_size: int = 16, types: Sequence[str] | None = None) -> dict:
    """Caption and answer every row, score everything, write `out_dir/report.json` and `predictions.jsonl`.

    `types` keeps only questions of those types; `qa_per_row` then keeps a row's first questions."""
    from midilm.annotate.questions import answer_is_correct
    from midilm.errors import MidilmError
    from midilm.evaluate.caption_facts import caption_precision, summarise_precision
    from midilm.evaluate.text_metrics import text_scores

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records, failed = [], []
    batches = [rows[i: i + batch_size] for i in range(0, len(rows), batch_size)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(rows), desc="answering", unit="row")
    for batch in batches:
        pieces, kept = [], []
        for row in batch:
            try:
                pieces.append(row_piece(row))
                kept.append(row)
            except (MidilmError, OSError) as e:
                failed.append({"path": row.get("path"), "error": str(e)})
        captions = answerer.describe_many(pieces) if pieces else []
        qa_pieces, questions, owners = [], [], []
        for k, row in enumerate(kept):
            qa = [q for q in row.get("qa") or [] if q["type"] != CAPTION_TYPE and (not types or q["type"] in types)]
            if qa_per_row is not None:
                qa = qa[:qa_per_row]
            for q in qa:
                qa_pieces.append(pieces[k])
                questions.append(q["question"])
                owners.append((k, q))
        answers = answerer.ask_many(qa_pieces, questions) if questions else []
        per_row: dict[int, list] = defaultdict(list)
        for (k, q), pred in zip(owners, answers):
            per_row[k].append({"question": q["question"], "type": q["type"], "style": q.get("style"),
                               "reference": q["answer"], "prediction": pred,
                               "correct": answer_is_correct(q["type"], pred, kept[k])})
        for k, row in enumerate(kept):
            records.append({"path": row["path"], "unit": row.get("unit"), "clip": row.get("clip") or "",
                            "clip_start": row.get("clip_start"), "clip_end": row.get("clip_end"),
                            "source": row.get("source"), "captions": list(row.get("captions") or []),
                            "caption": captions[k], "caption_facts": caption_precision(captions[k], row),
                            "qa": per_row.get(k, [])})
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    with_captions = [r for r in records if r["captions"]]
    caption_scores = text_scores([r["caption"] for r in with_captions], [r["captions"] for r in with_captions],
                                 bertscore_model, skip=skip_metrics)
    qa_items = [q for r in records for q in r["qa"]]
    qa_scores = text_scores([q["prediction"] for q in qa_items], [[q["reference"]] for q in qa_items],
                            bertscore_model, skip=skip_metrics)
    for scores, items in ((caption_scores, with_captions), (qa_scores, qa_items)):
        for metric, values in scores.pop("per_item").items():
            for item, v in zip(items, values):
                item.setdefault("scores", {})[metric] = round(v, 4)
    accuracy = accuracy_by_type(qa_items)
    core = [accuracy[t]["accuracy"] for t in CORE_TYPES if t in accuracy]
    report = {
        "summary": {"rows": len(records), "pieces": sum(r["unit"] == "piece" for r in records),
                    "clips": sum(r["unit"] == "clip" for r in records), "questions": len(qa_items),
                    "failed_rows": len(failed), "captioning": caption_scores, "qa": qa_scores,
                    "factual_accuracy": statistics.fmean(q["correct"] for q in qa_items) if qa_items else None,
                    "factual_accuracy_core_types": statistics.fmean(core) if core else None,
                    "caption_facts": summarise_precision([r["caption_facts"] for r in records])},
        "accuracy_by_type": accuracy,
        "model": getattr(answerer, "name", None) or str(getattr(answerer, "path", "") or type(answerer).__name__),
        "failed": failed,
    }
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def accuracy_by_type(qa_items: list[dict]) -> dict:
    """{type: {"accuracy", "n", "short", "long"}} sorted by type, core types first."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for q in qa_items:
        groups[q["type"]].append(q)
    order = [t for t in CORE_TYPES if t in groups] + sorted(t for t in groups if t not in CORE_TYPES)
    out = {}
    for t in order:
        items = groups[t]
        by_style = {s: [q["correct"] for q in items if q.get("style") == s] for s in ("short", "long")}
        out[t] = {"accuracy": statistics.fmean(q["correct"] for q in items), "n": len(items),
                  **{s: (statistics.fmean(v) if v else None) for s, v in by_style.items()}}
    return out
