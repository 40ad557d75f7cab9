"""`midilm eval ...`: evaluation from the command line."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_eval_generate(args: argparse.Namespace) -> int:
    from midilm.evaluate.generation import evaluate_generation, read_prompts
    from midilm.generate.cli import _load
    from midilm.generate.pipeline import GenerateOptions

    prompts = read_prompts(args.prompts)
    model = _load(args)
    options = GenerateOptions(seed=args.seed, max_tokens=args.max_tokens, temperature=args.temperature,
                              top_p=args.top_p)
    report = evaluate_generation(model, prompts, args.out, options, unconditioned=args.unconditioned)
    print(json.dumps(report["summary"], indent=2))
    print(f"wrote {len(prompts)} MIDI files and report.json to {args.out}", file=sys.stderr)
    return 0


def cmd_eval_prompts(args: argparse.Namespace) -> int:
    from pathlib import Path

    from midilm.evaluate.generation import prompts_from_dataset

    items = prompts_from_dataset(args.data, args.split, args.limit, args.seed)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(x) + "\n" for x in items))
    print(f"wrote {len(items)} prompts from the {args.split} split to {out}", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate models")
    esub = p.add_subparsers(dest="eval_command", metavar="WHAT", parser_class=type(p))
    q = esub.add_parser("generate", help="text-to-MIDI: CK, CKD, TB, TBT, instruments, validity on prompts")
    q.add_argument("--prompts", required=True, metavar="PROMPTS.jsonl")
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument("--model", default=None, help="model directory (default: the shipped one)")
    q.add_argument("--unconditioned", action="store_true", help="ignore the prompts (the baseline to beat)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--max-tokens", type=int, default=1023)
    q.add_argument("--temperature", type=float, default=1.0)
    q.add_argument("--top-p", type=float, default=0.98)
    q.add_argument("--device", default=None)
    q.add_argument("--threads", type=int, default=1)
    q.set_defaults(func=cmd_eval_generate)
    q = esub.add_parser("prompts", help="make a prompts file from a dataset split (captions + analysed targets)")
    q.add_argument("--data", required=True, help="dataset folder")
    q.add_argument("--split", default="test", choices=("test", "train"))
    q.add_argument("--limit", type=int, default=None)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("-o", "--output", required=True, metavar="PROMPTS.jsonl")
    q.set_defaults(func=cmd_eval_prompts)
