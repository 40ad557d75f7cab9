"""Evaluate a text-to-MIDI model on prompts with targets: key (CK, CKD), tempo bin (TB, TBT), instruments,
validity, measured from the generated notes, never from the tempo or key events the generator wrote.

Prompts are JSONL lines with "id", "prompt" and optional targets "key" ("D major"), "bpm", "meter",
"instruments" (words); missing targets are read from the prompt text. `prompts_from_dataset` makes such
a file from a dataset split, with each piece's caption as the prompt and its analysis as the targets.

With a reference folder of ground-truth MIDI (`<id>.mid`, same ids as the prompts) the set metrics run
too (`midilm.evaluate.sets`): pitch-class entropy, scale and groove consistency, polyphony, note density
and the COSIATEC compression ratio of both sets with their overlapping areas, and Frechet distances over
symbolic feature vectors and over the MIDI encoder's embeddings; FAD and CLAP (`midilm.evaluate.audio`)
only with local model files.
"""

from __future__ import annotations

import json
import random
import re
import statistics
from pathlib import Path

from midilm.evaluate.metrics import ck, ckd, instrument_scores, tb, tbt

_KEY = re.compile(r"\b([A-G](?:#|b|-flat|-sharp| flat| sharp)?)[ -]?(major|minor)\b", re.IGNORECASE)


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


SILENCE_SECONDS = 4.0  # the bar: no silence over 4 s


def longest_silence(piece) -> float | None:
    """Longest stretch (seconds) with no note sounding, from time 0 to the last note-off: a late start
    counts as silence too. None for an empty piece."""
    import numpy as np

    if not len(piece):
        return None
    order = np.argsort(piece.start, kind="stable")
    start, end = piece.start[order], np.maximum(piece.end, piece.start)[order]
    covered = np.maximum.accumulate(end)  # where the sound that began before each note has ended
    gaps = start[1:] - covered[:-1]
    return float(max(start[0], gaps.max(initial=0.0), 0.0))


def pitch_class_seconds(piece) -> list[float]:
    """Seconds of pitched (non-drum) note time per pitch class."""
    import numpy as np

    pitched = piece.program != 128
    dur = np.maximum(piece.end - piece.start, 0.0)[pitched]
    return np.bincount(piece.pitch[pitched] % 12, weights=dur, minlength=12).tolist()


def in_scale_share(pc_seconds: list[float], key: str | None) -> float | None:
    """Share of pitched note time whose pitch class is in the key's scale (natural minor for minor keys)."""
    from midilm.evaluate.metrics import parse_key
    from midilm.generate.steering import SCALES

    parsed = parse_key(key)
    total = float(sum(pc_seconds))
    if parsed is None or total <= 0:
        return None
    tonic, mode = parsed
    return float(sum(pc_seconds[(tonic + d) % 12] for d in SCALES[mode]) / total)


def measure(piece) -> dict:
    """Key, tempo, instruments, longest silence and pitch-class time of generated notes."""
    from midilm.annotate.harmony import estimate_key
    from midilm.annotate.rhythm import estimate_tempo_from_notes
    from midilm.music.gm import plain_name

    if not len(piece):
        return {"key": None, "bpm": None, "instruments": [], "longest_silence": None, "pc_seconds": [0.0] * 12}
    return {"key": estimate_key(piece).name, "bpm": estimate_tempo_from_notes(piece),
            "instruments": sorted({plain_name(int(p)) for p in set(piece.program.tolist())}),
            "longest_silence": longest_silence(piece), "pc_seconds": pitch_class_seconds(piece)}


def score_item(item_id: str, targets: dict, measured: dict, valid: bool) -> dict:
    precision, recall = instrument_scores(set(measured["instruments"]), set(targets["instruments"]))
    silence = measured.get("longest_silence")
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
        "in_scale": in_scale_share(measured.get("pc_seconds") or [0.0] * 12, targets["key"]),
        "longest_silence": None if silence is None else round(silence, 3),
        # an output without notes is all silence
        "silence_over_4s": True if silence is None else silence > SILENCE_SECONDS,
    }


def summarise(items: list[dict]) -> dict:
    out = {"n": len(items), "valid": sum(bool(i["valid"]) for i in items) / max(len(items), 1)}
    for k in ("ck", "ckd", "tb", "tbt", "instrument_precision", "instrument_recall", "in_scale", "silence_over_4s"):
        vals = [float(i[k]) for i in items if i.get(k) is not None]
        out[k] = statistics.fmean(vals) if vals else None
        out[f"{k}_n"] = len(vals)
    return out


def evaluate_generation(model, prompts: list[dict], out_dir: str | Path, options=None,
                        unconditioned: bool = False, progress: bool = True, reference_dir: str | Path | None = None,
                        encoder_dir: str | Path | None = None, clap_model: str | Path | None = None,
                        fad_model: str | Path | None = None) -> dict:
    """Generate one piece per prompt into `out_dir/<id>.mid` and write `out_dir/report.json`.

    `unconditioned` samples with an empty description (MIDI-LLM's caption-dropout prompt) and no
    prompt-derived constraints: the baseline the conditioned model must beat on key and tempo.
    `reference_dir` (ground truth `<id>.mid`) enables the set metrics; see `score_sets`.
    """
    from dataclasses import replace

    from midilm.generate.pipeline import GenerateOptions, generate, write_generation

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    options = options or GenerateOptions()
    if reference_dir is not None and not Path(reference_dir).is_dir():
        raise FileNotFoundError(f"reference folder not found: {reference_dir}")
    items, pieces = [], []
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
        pieces.append(gen.piece)
    extra = {"unconditioned": unconditioned, "model": str(getattr(model, "path", "") or ""),
             "options": {k: v for k, v in vars(options).items()}}
    return _finish(items, pieces, prompts, out, out, reference_dir, encoder_dir, clap_model, fad_model, extra)


def evaluate_files(prompts: list[dict], midi_dir: str | Path, out_dir: str | Path,
                   reference_dir: str | Path | None = None, encoder_dir: str | Path | None = None,
                   clap_model: str | Path | None = None, fad_model: str | Path | None = None,
                   progress: bool = True) -> dict:
    """Score MIDI files another system generated (`midi_dir/<id>.mid`, one per prompt) like our own
    generations, and write `out_dir/report.json`. A missing or unreadable file counts as invalid."""
    from midilm.errors import MidilmError
    from midilm.music.midi_io import read_midi
    from midilm.music.piece import empty_piece

    if not Path(midi_dir).is_dir():
        raise FileNotFoundError(f"folder of generated MIDI not found: {midi_dir}")
    if reference_dir is not None and not Path(reference_dir).is_dir():
        raise FileNotFoundError(f"reference folder not found: {reference_dir}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items, pieces = [], []
    iterator = prompts
    if progress:
        from tqdm import tqdm

        iterator = tqdm(prompts, desc="scoring", unit="file")
    for item in iterator:
        path = Path(midi_dir) / f"{item['id']}.mid"
        try:
            piece = read_midi(path)
        except (MidilmError, OSError):
            piece = empty_piece()
        items.append(score_item(str(item["id"]), targets_of(item), measure(piece), len(piece) > 0))
        pieces.append(piece)
    extra = {"unconditioned": False, "model": f"files in {midi_dir}", "options": {}}
    return _finish(items, pieces, prompts, Path(midi_dir), out, reference_dir, encoder_dir, clap_model, fad_model,
                   extra)


def _finish(items: list[dict], pieces: list, prompts: list[dict], midi_dir: Path, out: Path,
            reference_dir: str | Path | None, encoder_dir: str | Path | None, clap_model: str | Path | None,
            fad_model: str | Path | None, extra: dict) -> dict:
    """Set metrics, audio metrics and report.json for scored items."""
    summary = summarise(items)
    sets = score_sets(items, pieces, reference_dir, encoder_dir)
    densities = [i["note_density"] for i in items if i.get("note_density") is not None]
    summary["note_density_median"] = statistics.median(densities) if densities else None
    if clap_model or fad_model:
        from midilm.evaluate.audio import audio_metrics

        sets["audio"] = audio_metrics(midi_dir, prompts, reference_dir, clap_model=clap_model, fad_model=fad_model,
                                      out_dir=out)
    else:
        sets["audio"] = {"note": "FAD and CLAP skipped: pass --clap-model (a local LAION-CLAP checkpoint) "
                                 "and/or --fad-model to compute them"}
    report = {"summary": summary, "items": items, "sets": sets, "reference": str(reference_dir or ""), **extra}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def score_sets(items: list[dict], pieces: list, reference_dir: str | Path | None,
               encoder_dir: str | Path | None = None) -> dict:
    """Per-item symbolic features (added to each item) and, with references, the set comparisons."""
    from midilm.errors import MidilmError
    from midilm.evaluate.sets import (
        DISTRIBUTION_FEATURES,
        compare_distributions,
        encoder_frechet,
        piece_features,
        summarise_features,
        symbolic_frechet,
    )
    from midilm.music.midi_io import read_midi

    gen_features = []
    for item, piece in zip(items, pieces):
        f = piece_features(piece)
        item.update({k: f[k] for k in ("pitch_class_entropy", "scale_consistency", "groove_consistency",
                                        "polyphony", "note_density", "compression_ratio")})
        gen_features.append(f)
    out: dict = {"generated": summarise_features(gen_features)}
    if reference_dir is None:
        out["note"] = "distribution metrics skipped: pass --reference DIR (ground-truth <id>.mid files)"
        return out
    ref_features, ref_pieces, missing, unreadable = [], [], [], []
    for item in items:
        path = Path(reference_dir) / f"{item['id']}.mid"
        if not path.is_file():
            missing.append(item["id"])
            continue
        try:
            ref = read_midi(path)
        except MidilmError:
            unreadable.append(item["id"])
            continue
        ref_pieces.append(ref)
        ref_features.append(piece_features(ref))
        ref_features[-1]["id"] = item["id"]
    out.update({"reference": summarise_features(ref_features), "n_reference": len(ref_features),
                "reference_items": [{k: f.get(k) for k in ("id", *DISTRIBUTION_FEATURES)} for f in ref_features],
                "missing_references": missing, "unreadable_references": unreadable,
                "distributions": compare_distributions(gen_features, ref_features),
                "density": density_comparison(items, ref_features),
                "frechet_symbolic": symbolic_frechet(gen_features, ref_features),
                "frechet_encoder": encoder_frechet(pieces, ref_pieces, encoder_dir)})
    return out


DENSITY_FACTOR = 1.5  # the bar: note density within a factor 1.5 of the real pieces


def density_comparison(items: list[dict], reference: list[dict]) -> dict:
    """Notes per second of the outputs against their reference pieces: both medians, their ratio, and the
    share of outputs within DENSITY_FACTOR of their own reference piece."""
    gen = {i["id"]: i.get("note_density") for i in items}
    ref = {r["id"]: r.get("note_density") for r in reference}
    pairs = [(gen[k], ref[k]) for k in ref if gen.get(k) and ref[k]]
    g_med = statistics.median([v for v in gen.values() if v is not None]) if any(gen.values()) else None
    r_med = statistics.median([v for v in ref.values() if v]) if any(ref.values()) else None
    return {
        "generated_median": g_med, "reference_median": r_med,
        "ratio": g_med / r_med if g_med and r_med else None,
        "within_factor_share": (sum(1 / DENSITY_FACTOR <= g / r <= DENSITY_FACTOR for g, r in pairs) / len(pairs)
                                if pairs else None),
        "factor": DENSITY_FACTOR, "n_pairs": len(pairs),
    }


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
                      "instruments": list(r.get("instrument_words") or []), "source": r.get("source"),
                      "path": str(r["path"])})
    return items


def write_references(items: list[dict], out_dir: str | Path) -> int:
    """Copy each item's source MIDI ("path") to `out_dir/<id>.mid` (the --reference folder); returns how many."""
    import shutil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for item in items:
        src = Path(str(item.get("path") or ""))
        if src.is_file():
            shutil.copyfile(src, out / f"{item['id']}.mid")
            n += 1
    return n
