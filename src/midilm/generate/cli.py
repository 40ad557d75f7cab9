"""`midilm generate`: text -> MIDI files from the command line (one prompt, or a JSONL of prompts)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from midilm.cli_common import CliError, check_device
from midilm.generate.load import default_model_path

__all__ = ["default_model_path", "register"]


def load_for_args(args):
    """The model of `--model`/`--backend`/`--gguf`/`--device`/`--threads` (the shipped one by default)."""
    import torch

    from midilm.generate.load import load_model

    backend, gguf = getattr(args, "backend", "transformers"), getattr(args, "gguf", None)
    # a device torch cannot use here is one line now, not an assertion after the model has loaded
    device = check_device(args.device) if backend == "transformers" else args.device
    torch.set_num_threads(args.threads)
    options = {}
    if backend == "llamacpp":
        options = {"gguf": gguf, "gguf_type": args.gguf_type, "threads": args.threads}
    elif gguf:
        raise CliError("--gguf is for --backend llamacpp")
    if backend == "vllm" and getattr(args, "cfg", None) not in (None, 1.0):
        # said before a GPU model loads for minutes, not after
        raise CliError("--cfg (classifier-free guidance) is not available with --backend vllm")
    try:
        return load_model(args.model, backend=backend, device=device, **options)
    except ImportError as e:  # an optional backend that is not installed: say how to get it
        raise CliError(str(e)) from None


def _options(args):
    from midilm.generate.pipeline import GenerateOptions

    return GenerateOptions(
        seed=args.seed, max_tokens=args.max_tokens, seconds=args.seconds, bpm=args.bpm, time_signature=args.meter,
        instruments=[w for w in args.instruments.split(",") if w.strip()] if args.instruments else None,
        n=args.n, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        constrained=not args.no_constraints, preset=args.preset,
        steer=not args.no_steer, key=args.key, key_prior=args.key_prior, beat_grid=args.beat_grid,
        gap_penalty=args.gap_penalty, max_gap_beats=args.max_gap, cfg=args.cfg, melody_steps=args.melody_steps,
        sustain=args.sustain, established_key=args.established_key, balance=args.balance,
    ).with_preset()


def _given(args) -> dict:
    """The piece to continue (its notes, tempo map and AMT events, whole) or the melody to accompany."""
    from midilm.codecs.amt.encode import encode_midi
    from midilm.codecs.amt.lines import as_controls
    from midilm.music.midi_io import read_midi

    if args.continue_from and args.melody:
        raise CliError("--continue and --melody cannot be combined")
    if args.continue_from:
        return {"given": read_midi(args.continue_from), "context": encode_midi(args.continue_from)}
    if args.melody:
        return {"given": read_midi(args.melody), "controls": as_controls(encode_midi(args.melody))}
    return {}


def read_prompts_file(path: str | Path) -> list[tuple[str, str]]:
    """(id, prompt) of each line of a JSONL file of {"id", "prompt"}; ids must be usable as file names."""
    from midilm.generate.prompts_file import read_prompts

    return [(str(obj["id"]), str(obj["prompt"])) for obj in read_prompts(path)]


def _prompts(args) -> list[tuple[str, str]]:
    if args.prompts:
        return read_prompts_file(args.prompts)
    if args.prompt is None:
        raise ValueError("give a PROMPT or --prompts PROMPTS.jsonl")
    return [("", args.prompt)]


def cmd_generate(args: argparse.Namespace) -> int:
    from midilm.generate.pipeline import generate, output_paths, write_generation

    prompts = _prompts(args)
    options = _options(args)
    given = _given(args)
    model = load_for_args(args)
    out = Path(args.output)
    for pid, prompt in prompts:
        target = out / f"{pid}.mid" if args.prompts else out
        gens = generate(model, prompt, options, **given)
        if gens:
            print(f"midilm: {gens[0].settings['instruments_notice']}", file=sys.stderr)
            print(f"midilm: {steering_notice(gens[0].settings)}", file=sys.stderr)
        for gen, path in zip(gens, output_paths(target, len(gens))):
            files = write_generation(gen, path, wav=args.wav, png=args.png)
            s = gen.settings
            print(f"wrote {files['midi']}: {s['notes']} notes, {s['music_seconds']:.1f} s at {s['bpm']:g} bpm "
                  f"({s['bpm_source']}), {s['tokens']} tokens in {s['generation_seconds']:.1f} s", file=sys.stderr)
    return 0


# steering controls the notice names by label and strength alone, in its order
_PLAIN_CONTROLS = (("step_strength", "melodic steps"), ("sustain_strength", "sustain"),
                   ("established_strength", "established key"), ("balance_strength", "instrument balance"))


def steering_notice(settings: dict) -> str:
    """One line: what the steering pulled toward, and the length (from a generation's settings)."""
    st, length = settings.get("steering") or {}, settings.get("length") or {}
    parts = []
    if st.get("key_strength"):
        parts.append(f"key {st['key']} ({st['key_strength']:g})")
    if st.get("grid_strength"):
        parts.append(f"beat grid {settings['bpm']:g} bpm {st['meter']} ({st['grid_strength']:g})")
    if st.get("gap_strength"):
        parts.append(f"gaps past {st['max_gap_beats']:g} beats ({st['gap_strength']:g}/beat)")
    parts += [f"{label} ({st[name]:g})" for name, label in _PLAIN_CONTROLS if st.get(name)]
    if st.get("cfg_scale", 1.0) != 1.0:
        parts.append(f"guidance {st['cfg_scale']:g}")
    text = "steering: " + (", ".join(parts) if parts else st.get("note", "off"))
    if length.get("seconds"):
        text += f"; length {length['seconds']:g} s ({length['source']})"
    return text


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


def _strength(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be in 0..100, got {text}")
    return value


def _key(text: str) -> str:
    from midilm.generate.steering import parse_key

    try:
        parse_key(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _cfg_scale(text: str) -> float:
    value = _strength(text)
    if value > 20:
        raise argparse.ArgumentTypeError(f"must be in 0..20, got {text}")
    return value


def _add_steering(p) -> None:
    from midilm.generate import steering as st

    g = p.add_argument_group("steering", "soft biases toward what the prompt asks (strengths in nats; 0 = off)")
    g.add_argument("--key", type=_key, default=None,
                   help='key to steer toward, e.g. "F# minor" (default: the one the prompt names)')
    g.add_argument("--no-steer", action="store_true",
                   help="the model alone: no key prior, beat grid, gap penalty or guidance unless given below")
    g.add_argument("--key-prior", type=_strength, default=None, metavar="S",
                   help=f"pull toward the key's scale, tonic triad most (default {st.DEFAULT_KEY_STRENGTH:g} when a "
                        "key is known)")
    g.add_argument("--beat-grid", type=_strength, default=None, metavar="S",
                   help="pull onsets onto the 16th grid of the tempo, beats most (default "
                        f"{st.DEFAULT_GRID_STRENGTH:g}; at {st.DEFAULT_BPM:g} bpm when no tempo is given)")
    g.add_argument("--gap-penalty", type=_strength, default=None, metavar="S",
                   help=f"per beat of silence past --max-gap (default {st.DEFAULT_GAP_STRENGTH:g})")
    g.add_argument("--max-gap", type=_positive(float), default=None, metavar="BEATS",
                   help=f"beats between onsets before the gap penalty starts (default {st.DEFAULT_MAX_GAP_BEATS:g}, "
                        f"{st.SLOW_MAX_GAP_BEATS:g} below {st.SLOW_BPM:g} bpm)")
    g.add_argument("--melody-steps", type=_strength, default=None, metavar="S",
                   help="melodic motion, with a key: a note under a half note gains S on a scale step from its "
                        "instrument's previous top note and loses S on repeating it (default "
                        f"{st.DEFAULT_STEP_STRENGTH:g})")
    g.add_argument("--sustain", type=_strength, default=None, metavar="S",
                   help="notes under a beat lose up to S, the shorter the more (default "
                        f"{st.DEFAULT_SUSTAIN_STRENGTH:g})")
    g.add_argument("--established-key", type=_strength, default=None, metavar="S",
                   help="with no key in the prompt or options: once the piece has "
                        f"{st.ESTABLISHED_NOTES} pitched notes, tones outside the key they establish lose S "
                        f"(default {st.DEFAULT_ESTABLISHED_STRENGTH:g})")
    g.add_argument("--balance", type=_strength, default=None, metavar="S",
                   help="with two or more instruments asked for: each is drawn toward a fair share of the recent "
                        "notes (drums count double), gaining up to S where it plays too little and losing up to S "
                        f"where it plays too much (default {st.DEFAULT_BALANCE_STRENGTH:g})")
    g.add_argument("--cfg", type=_cfg_scale, default=None, metavar="SCALE",
                   help=f"classifier-free guidance against the empty description (default {st.DEFAULT_CFG_SCALE:g}: "
                        "off; another scale doubles the work per token)")


def register(sub) -> None:
    from midilm.cli_common import bpm, meter
    from midilm.generate.backends import BACKENDS
    from midilm.generate.pipeline import PRESETS
    from midilm.models.gguf import GGUF_HEADS, GGUF_TYPES

    p = sub.add_parser("generate", help="write MIDI from a text description")
    p.add_argument("prompt", nargs="?", metavar="PROMPT")
    p.add_argument("-o", "--output", required=True, metavar="OUT.mid|DIR")
    p.add_argument("--prompts", metavar="PROMPTS.jsonl", help='one {"id", "prompt"} per line; writes DIR/<id>.mid')
    p.add_argument("--model", metavar="PATH", help="model directory (default: the shipped midilm-t2m-tiny)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-tokens", type=_positive(int), default=2046, help="new music tokens (3 per note)")
    p.add_argument("--seconds", type=_positive(float), default=None,
                   help="seconds of new music (a piece given to --continue does not count)")
    p.add_argument("--bpm", type=bpm, default=None, help="tempo grid (default: the prompt's, else estimated)")
    p.add_argument("--meter", type=meter, default=None, help="time signature, e.g. 3/4")
    p.add_argument("--instruments", default=None, help="comma-separated allow-list, e.g. piano,violin,drums")
    p.add_argument("--n", type=_positive(int), default=1, help="samples per prompt")
    p.add_argument("--temperature", type=_positive(float), default=1.0)
    p.add_argument("--top-p", type=_positive(float), default=0.98)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--continue", dest="continue_from", metavar="FILE.mid", help="continue this piece")
    p.add_argument("--melody", metavar="MELODY.mid", help="accompany this melody (AMT anticipation)")
    p.add_argument("--no-constraints", action="store_true", help="sample without the grammar (for comparison)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="midi-llm: sample exactly as MIDI-LLM's release does (temperature 1.0, top-p 0.98, 2,046 "
                        "tokens, any music id, no grammar), for like-for-like comparisons; overrides those options")
    _add_steering(p)
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
