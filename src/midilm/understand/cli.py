"""`midilm describe`, `midilm ask` and `midilm chat`: questions about a MIDI file from the command line.

`--model analysis` answers from the analysis of the notes (`midilm.understand.analysis`) instead of a trained
model: no weights to load, and every fact it states is the analysis's.
"""

from __future__ import annotations

import argparse
import sys

ANALYSIS = "analysis"
DTYPES = ("fp32", "bf16", "fp16")


def _load(args):
    if args.model == ANALYSIS:
        from midilm.understand.analysis import AnalysisAnswerer

        return AnalysisAnswerer(seed=args.seed, caption="summary")
    import torch

    from midilm.cli_common import check_device
    from midilm.understand.model import load_understanding_model

    device = check_device(args.device)  # before loading: an unavailable device is one line at once
    torch.set_num_threads(args.threads)
    return load_understanding_model(args.model, device=device or "cpu", dtype=args.dtype)


def _piece(path: str):
    from midilm.music.midi_io import read_midi

    return read_midi(path)  # MidiReadError (one line) for a missing, corrupt or empty file


def _gen_kwargs(args) -> dict:
    """Sampling options for a trained model; the analysis answerer takes none."""
    if args.model == ANALYSIS:
        return {}
    return {"max_new_tokens": args.max_tokens, "temperature": args.temperature, "top_p": args.top_p,
            "seed": args.seed}


def cmd_describe(args: argparse.Namespace) -> int:
    piece = _piece(args.file)
    model = _load(args)
    print(model.describe(piece, **_gen_kwargs(args)))
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    piece = _piece(args.file)
    model = _load(args)
    print(model.ask(piece, args.question, **_gen_kwargs(args)))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    piece = _piece(args.file)
    model = _load(args)
    interactive = sys.stdin.isatty()
    history: list[tuple[str, str]] = []
    while True:
        if interactive:
            print("you> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:  # EOF
            break
        question = line.strip()
        if not question:
            continue
        if question.lower() in ("quit", "exit", "/quit", "/exit"):
            break
        answer = model.ask(piece, question, history=history[-args.turns :] if args.turns else [],
                           **_gen_kwargs(args))
        print(answer, flush=True)
        history.append((question, answer))
    return 0


def _common(p: argparse.ArgumentParser, max_tokens: int) -> None:
    p.add_argument("--model", default=None, metavar="DIR",
                   help="model directory (default: the shipped one), or 'analysis': answer from the analysis "
                        "of the notes (key, tempo, meter, instruments, ...; no model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", dest="top_p", type=float, default=1.0)
    p.add_argument("--max-tokens", dest="max_tokens", type=int, default=max_tokens)
    p.add_argument("--device", default=None, help="where the model runs: cpu, cuda, cuda:1, mps (default: cpu)")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="weights' precision (default: bf16 on a GPU that has it, else fp32)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (tiny models run best on one)")


def register(sub) -> None:
    from midilm.understand.model import ANSWER_TOKENS, DESCRIBE_TOKENS

    p = sub.add_parser("describe", help="a caption of a MIDI file (MIDI understanding model)")
    p.add_argument("file", metavar="FILE.mid")
    _common(p, DESCRIBE_TOKENS)
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("ask", help="answer a question about a MIDI file")
    p.add_argument("file", metavar="FILE.mid")
    p.add_argument("question", metavar="QUESTION")
    _common(p, ANSWER_TOKENS)
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("chat", help="questions about a MIDI file, one per line on stdin (multi-turn)")
    p.add_argument("file", metavar="FILE.mid")
    p.add_argument("--turns", type=int, default=4, help="earlier turns kept as context (default 4)")
    _common(p, ANSWER_TOKENS)
    p.set_defaults(func=cmd_chat)
