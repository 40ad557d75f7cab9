"""Evaluate a text-to-MIDI model on prompts with targets: key (CK, CKD), tempo bin (TB, TBT), instruments,
validity, measured from the generated notes, never from the tempo or key events the generator wrote.

Prompts are JSONL lines with "id", "prompt" and optional targets "key" ("D major"), "bpm", "meter",
"instruments" (words); missing targets are read from the prompt text. `prompts_from_dataset` makes such
a file from a dataset split, with each piece's caption as the prompt and its analysis as the targets.
"""

from __future__ import annotations

import json
import random
import re
import statistics
from pathlib import Path

from midilm.evaluate.metrics import ck, ckd, instrument_scores, tb, tbt

_KEY = re.compile(r"\b([A-G](?:#|b|-flat|-sharp| flat| sharp)?)[ -]?(major|minor)\b", re.IGNORECASE)


def read_prompts(path: str | Path) -> list[dict]:
    items, seen = [], set()
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{n}: not valid JSON") from None
        if not isinstance(obj, dict) or "id" not in obj or "prompt" not in obj:
            raise ValueError(f"{path}:{n}: each line needs \"id\" and \"prompt\"")
        pid = str(obj["id"])
        if not pid or "/" in pid or "\\" in pid or pid.startswith(".") or pid in seen:
            raise ValueError(f"{path}:{n}: id {pid!r} is empty, a duplicate or not a file name")
        seen.add(pid)
        items.append(obj)
    return items


def targets_of(item: dict) -> dict:
    """Targets given in the item, else read from its prompt."""
    from midilm.generate.pipeline import read_prompt
    from midilm.music.gm import plain_name, program_from_word

    prompt = item["prompt"]
    found = read_prompt(prompt)
    key = item.get("key")
    if key is None:
        m = _KEY.search(prompt)
        key = f"{m.group(1)} {m.group(2).lower()}" if m else None
    words = item.get("instruments")
    if words is None:
        words = [plain_name(p) for p in found.instruments]
    programs = set()
    for w in words:
        try:
            programs.add(program_from_word(str(w)))
        except ValueError:
            continue
    meter = item.get("meter") or (f"{found.time_signature[0]}/{found.time_signature[1]}" if found.time_signature
                                  else None)
    return {"key": key, "bpm": item.get("bpm") or found.bpm, "meter": meter,
            "instruments": sorted({plain_name(p) for p in programs})}


def measure(piece) -> dict:
    """Key, tempo and instruments of generated notes."""
    from midilm.annotate.harmony import estimate_key
    from midilm.annotate.rhythm import estimate_tempo_from_notes
    from midilm.music.gm import plain_name

    if not len(piece):
        return {"key": None, "bpm": None, "instruments": []}
    return {"key": estimate_key(piece).name, "bpm": estimate_tempo_from_notes(piece),
            "instruments": sorted({plain_name(int(p)) for p in set(piece.program.tolist())})}


def score_item(item_id: str, targets: dict, measured: dict, valid: bool) -> dict:
    precision, recall = instrument_scores(set(measured["instruments"]), set(targets["instruments"]))
    return {
        "id": item_id, "valid": valid,
        "key": measured["key"], "bpm": measured["bpm"], "instruments": measured["instruments"],
        "target_key": targets["key"], "target_bpm": targets["bpm"], "target_instruments": targets["instruments"],
        "ck": ck(measured["key"], targets["key"]) if targets["key"] else None,
        "ckd": ckd(measured["key"], targets["key"]) if targets["key"] else None,
        "tb": tb(measured["bpm"], targets["bpm"]) if targets["bpm"] else None,
        "tbt": tbt(measured["bpm"], targets["bpm"]) if targets["bpm"] else None,
        "instrument_precision": precision if targets["instruments"] else None,
        "instrument_recall": recall if targets["instruments"] else None,
    }


def summarise(items: list[dict]) -> dict:
    out = {"n": len(items), "valid": sum(bool(i["valid"]) for i in items) / max(len(items), 1)}
    for k in ("ck", "ckd", "tb", "tbt", "instrument_precision", "instrument_recall"):
        vals = [float(i[k]) for i in items if i.get(k) is not None]
        out[k] = statistics.fmean(vals) if vals else None
        out[f"{k}_n"] = len(vals)
    return out


def evaluate_generation(model, prompts: list[dict], out_dir: str | Path, options=None,
                        unconditioned: bool = False, progress: bool = True) -> dict:
    """Generate one piece per prompt into `out_dir/<id>.mid` and write `out_dir/report.json`.

    `unconditioned` samples with an empty description (MIDI-LLM's caption-dropout prompt) and no
    prompt-derived constraints: the baseline the conditioned model must beat on key and tempo.
    """
    from dataclasses import replace

    from midilm.generate.pipeline import GenerateOptions, generate, write_generation

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    options = options or GenerateOptions()
    items = []
    iterator = prompts
    if progress:
        from tqdm import tqdm

        iterator = tqdm(prompts, desc="generating", unit="prompt")
    for k, item in enumerate(iterator):
        targets = targets_of(item)
        opts = replace(options, n=1, seed=(options.seed or 0) + k)
        if unconditioned:
            opts = replace(opts, use_prompt_instruments=False)
        gen = generate(model, "" if unconditioned else item["prompt"], opts)[0]
        write_generation(gen, out / f"{item['id']}.mid")
        valid = gen.report.dropped == 0 and len(gen.piece) > 0
        items.append(score_item(str(item["id"]), targets, measure(gen.piece), valid))
    report = {"summary": summarise(items), "items": items, "unconditioned": unconditioned,
              "options": {k: v for k, v in vars(options).items()}}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def prompts_from_dataset(dataset_dir: str | Path, split: str = "test", limit: int | None = None,
                         seed: int = 0) -> list[dict]:
    """Prompt items from whole pieces of a dataset split: a caption as the prompt, the analysis as targets."""
    from midilm.annotate.dataset import load_rows

    rng = random.Random(seed)
    rows = [r for r in load_rows(dataset_dir, split) if r.get("unit") == "piece" and r.get("captions")]
    rng.shuffle(rows)
    items = []
    for r in rows[: limit or len(rows)]:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(r["path"])).stem)[:60]
        items.append({"id": f"{len(items):04d}-{stem}", "prompt": rng.choice(r["captions"]), "key": r.get("key"),
                      "bpm": r.get("bpm"), "meter": r.get("time_signature"),
                      "instruments": list(r.get("instrument_words") or []), "source": r.get("source")})
    return items
