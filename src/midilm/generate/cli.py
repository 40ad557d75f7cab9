"""`midilm generate`: text -> MIDI files from the command line (one prompt, or a JSONL of prompts)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_ERROR = 1


def default_model_path() -> Path:
    """The text-to-MIDI model shipped inside the package."""
    return Path(__file__).resolve().parents[1] / "data" / "models" / "midilm-t2m-tiny"


def _load(args):
    from midilm.cli import CliError
    from midilm.models.midi_llm import load_text_to_midi

    path = Path(args.model) if args.model else default_model_path()
    if not path.is_dir():
        hint = "" if args.model else " (no default model is shipped in this install: pass --model DIR)"
        raise FileNotFoundError(f"model directory not found: {path}{hint}")
    import torch

    torch.set_num_threads(args.threads)
    # other commands (midilm eval generate) share this loader without the backend options
    backend, gguf = getattr(args, "backend", "transformers"), getattr(args, "gguf", None)
    options = {}
    if backend == "llamacpp":
        options = {"gguf": gguf, "gguf_type": args.gguf_type, "threads": args.threads}
    elif gguf:
        raise CliError("--gguf is for --backend llamacpp")
    try:
        return load_text_to_midi(path, device=args.device, backend=backend, **options)
    except ImportError as e:  # an optional backend that is not installed: say how to get it
        raise CliError(str(e)) from None


def _options(args):
    from midilm.generate.pipeline import GenerateOptions

    return GenerateOptions(
        seed=args.seed, max_tokens=args.max_tokens, seconds=args.seconds, bpm=args.bpm, time_signature=args.meter,
        instruments=[w for w in args.instruments.split(",") if w.strip()] if args.instruments else None,
        n=args.n, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        constrained=not args.no_constraints,
    )


def _given_parts(args) -> tuple[list[int], list[int]]:
    """AMT context (a file to continue) and controls (a melody to accompany)."""
    from midilm.codecs.amt.encode import encode_midi
    from midilm.codecs.amt.lines import as_controls
    from midilm.codecs.amt.vocab import MAX_TIME

    context: list[int] = []
    controls: list[int] = []
    if args.continue_from:
        events = encode_midi(args.continue_from)
        # keep the last minute at most: the model sees one 100 s window
        last = max(events[0::3])
        start = max(0, last - 6000)
        trip = [events[i : i + 3] for i in range(0, len(events), 3) if events[i] >= start]
        context = [x for t in trip for x in (t[0] - start, t[1], t[2])]
    if args.melody:
        events = encode_midi(args.melody)
        events = [x for i in range(0, len(events), 3) if events[i] < MAX_TIME for x in events[i : i + 3]]
        controls = as_controls(events)
    return context, controls


def _prompts(args) -> list[tuple[str, str]]:
    if args.prompts:
        from midilm.evaluate.generation import read_prompts

        return [(str(item["id"]), str(item["prompt"])) for item in read_prompts(args.prompts)]
    if args.prompt is None:
        raise ValueError("give a PROMPT or --prompts PROMPTS.jsonl")
    return [("", args.prompt)]


def cmd_generate(args: argparse.Namespace) -> int:
    from midilm.generate.pipeline import generate, output_paths, write_generation

    prompts = _prompts(args)
    options = _options(args)
    model = _load(args)
    context, controls = _given_parts(args)
    out = Path(args.output)
    for pid, prompt in prompts:
        target = out / f"{pid}.mid" if args.prompts else out
        gens = generate(model, prompt, options, context, controls)
        for gen, path in zip(gens, output_paths(target, len(gens))):
            files = write_generation(gen, path, wav=args.wav, png=args.png)
            s = gen.settings
            print(f"wrote {files['midi']}: {s['notes']} notes, {s['music_seconds']:.1f} s at {s['bpm']:g} bpm "
                  f"({s['bpm_source']}), {s['tokens']} tokens in {s['generation_seconds']:.1f} s", file=sys.stderr)
    return 0


def cmd_export_gguf(args: argparse.Namespace) -> int:
    from midilm.models.gguf import export_gguf

    model = Path(args.model)
    if not model.is_dir():
        raise FileNotFoundError(f"model directory not found: {model}")
    out = Path(args.output)
    if out.suffix != ".gguf":
        raise ValueError(f"the output should end in .gguf: {out}")
    export_gguf(model, out, args.type, args.head)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {args.type}, {args.head} head)", file=sys.stderr)
    return 0


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def register(sub) -> None:
    from midilm.cli import _bpm, _meter
    from midilm.generate.backends import BACKENDS
    from midilm.models.gguf import GGUF_HEADS, GGUF_TYPES

    p = sub.add_parser("generate", help="write MIDI from a text description")
    p.add_argument("prompt", nargs="?", metavar="PROMPT")
    p.add_argument("-o", "--output", required=True, metavar="OUT.mid|DIR")
    p.add_argument("--prompts", metavar="PROMPTS.jsonl", help='one {"id", "prompt"} per line; writes DIR/<id>.mid')
    p.add_argument("--model", metavar="PATH", help="model directory (default: the shipped midilm-t2m-tiny)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-tokens", type=_positive(int), default=2046, help="new music tokens (3 per note)")
    p.add_argument("--seconds", type=_positive(float), default=None, help="stop after this much music")
    p.add_argument("--bpm", type=_bpm, default=None, help="tempo grid (default: the prompt's, else estimated)")
    p.add_argument("--meter", type=_meter, default=None, help="time signature, e.g. 3/4")
    p.add_argument("--instruments", default=None, help="comma-separated allow-list, e.g. piano,violin,drums")
    p.add_argument("--n", type=_positive(int), default=1, help="samples per prompt")
    p.add_argument("--temperature", type=_positive(float), default=1.0)
    p.add_argument("--top-p", type=_positive(float), default=0.98)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--continue", dest="continue_from", metavar="FILE.mid", help="continue this piece")
    p.add_argument("--melody", metavar="MELODY.mid", help="accompany this melody (AMT anticipation)")
    p.add_argument("--no-constraints", action="store_true", help="sample without the grammar (for comparison)")
    p.add_argument("--wav", action="store_true", help="also render audio with FluidSynth")
    p.add_argument("--png", action="store_true", help="also draw a piano roll")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cpu)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (one is as fast as two for tiny models)")
    p.add_argument("--backend", choices=BACKENDS, default="transformers",
                   help="what runs the model: transformers (default), llamacpp (CPU, GGUF) or vllm (GPU)")
    p.add_argument("--gguf", metavar="MODEL.gguf", help="llamacpp: this GGUF instead of the cached conversion")
    p.add_argument("--gguf-type", choices=GGUF_TYPES, default="q8_0",
                   help="llamacpp: weight type of the cached conversion (f32 and f16 match transformers' "
                        "greedy output; q8_0, the default, is fastest)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("export", help="convert a model to another format")
    formats = p.add_subparsers(dest="format", metavar="FORMAT", parser_class=type(p))
    g = formats.add_parser("gguf", help="a text-to-MIDI Llama checkpoint as a GGUF file for llama.cpp")
    g.add_argument("model", metavar="MODEL_DIR")
    g.add_argument("-o", "--output", required=True, metavar="OUT.gguf")
    g.add_argument("--type", choices=GGUF_TYPES, default="f16", help="weight type (default f16)")
    g.add_argument("--head", choices=GGUF_HEADS, default="full",
                   help="full: every vocabulary row (any llama.cpp tool); events: only text and AMT event rows, "
                        "what `midilm generate --backend llamacpp` runs for constrained sampling (half the work)")
    g.set_defaults(func=cmd_export_gguf)
    p.set_defaults(func=lambda args: p.error("give a format: gguf"))
