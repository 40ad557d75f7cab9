"""The `midilm` command line: one sub-command per job, errors as one readable line and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from midilm.cli_common import (  # noqa: F401 (CliError and EXIT_USAGE are this module's API too)
    EXIT_ERROR,
    EXIT_USAGE,
    CliError,
    atomic_text,
    bpm,
    meter,
    report_file_error,
)

# --- tokenize / detokenize -------------------------------------------------------------------------


def cmd_tokenize(args: argparse.Namespace) -> int:
    from midilm.codecs.amt.encode import encode_midi
    from midilm.errors import MidilmError

    failed = 0
    all_events = []
    for path in args.files:
        try:
            tokens = encode_midi(path)
        except MidilmError as e:
            failed += 1
            report_file_error(path, e, args.json)
            continue
        if args.lines:
            all_events.append(tokens)
        if args.json:
            print(json.dumps({"path": path, "tokens": tokens}, separators=(",", ":")))
        elif not args.lines:
            print(f"{path}: {len(tokens) // 3} events ({len(tokens)} ids)")
    if args.lines:
        from midilm.codecs.amt.lines import training_lines

        stats: dict = {}
        out = Path(args.lines)
        with atomic_text(out) as f:
            for line in training_lines(all_events, augment_factor=args.augment, seed=args.seed, stats=stats):
                f.write(" ".join(map(str, line)) + "\n")
        print(f"wrote {stats.get('lines', 0)} training lines to {out} ({json.dumps(stats)})", file=sys.stderr)
    return EXIT_ERROR if failed else 0


def _load_token_file(path: str) -> tuple[list, list | None]:
    from midilm.errors import read_file_bytes

    try:
        raw = read_file_bytes(path, limit=256 << 20)
    except Exception as e:
        raise CliError(str(e).replace("cannot read MIDI ", "cannot read ")) from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CliError(f"{path}: not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
    velocities = None
    if isinstance(data, dict):
        velocities = data.get("velocities")
        data = data.get("tokens")
    if not isinstance(data, list):
        raise CliError(f"{path}: expected a JSON list of integers (or an object with \"tokens\")")
    return data, velocities if isinstance(velocities, list) else None


def cmd_detokenize(args: argparse.Namespace) -> int:
    import warnings

    from midilm.codecs.amt.decode import decode_tokens
    from midilm.music.midi_io import write_midi

    items, velocities = _load_token_file(args.tokens)
    ids = [int(x) for x in items if isinstance(x, int) and not isinstance(x, bool)]
    non_int = len(items) - len(ids)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        piece, report = decode_tokens(
            ids, bpm=args.bpm, time_signature=args.meter, velocity=args.velocity,
            velocities=[int(v) for v in velocities if isinstance(v, int)] if velocities else None,
            text_vocab_size=args.text_vocab_size,
        )
    out = write_midi(piece, args.output)
    for w in caught:
        print(f"midilm: warning: {w.message}", file=sys.stderr)
    extra = f"; {non_int} non-integer entries dropped" if non_int else ""
    print(f"wrote {out}: {report.summary()}{extra}", file=sys.stderr)
    return 0


# --- info -------------------------------------------------------------------------------------------


def piece_summary(piece) -> dict:
    """Facts about a piece for `midilm info`."""
    import numpy as np

    from midilm.music.gm import program_name

    programs, counts = np.unique(piece.program, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    bpms = piece.tempo_map.bpm
    return {
        "path": piece.path,
        "duration_seconds": round(piece.duration, 3),
        "notes": len(piece),
        "tracks": len(piece.tracks),
        "ticks_per_beat": piece.ticks_per_beat,
        "bpm": round(float(bpms[0]), 2),
        "tempo_changes": int(len(bpms) - 1),
        "bpm_range": [round(float(bpms.min()), 2), round(float(bpms.max()), 2)],
        "time_signature": str(piece.time_signature),
        "time_signature_changes": max(len(piece.time_signatures) - 1, 0),
        "key_signature": piece.key_signatures[0].name if piece.key_signatures else None,
        "instruments": [{"program": int(programs[i]), "name": program_name(int(programs[i])),
                         "notes": int(counts[i])} for i in order],
        "pitch_range": [int(piece.pitch.min()), int(piece.pitch.max())] if len(piece) else None,
    }


def cmd_info(args: argparse.Namespace) -> int:
    from midilm.errors import MidilmError
    from midilm.music.midi_io import read_midi

    failed = 0
    for path in args.files:
        try:
            info = piece_summary(read_midi(path, allow_empty=True))
        except MidilmError as e:
            failed += 1
            report_file_error(path, e, False)
            continue
        if args.json:
            print(json.dumps(info))
            continue
        minutes, seconds = divmod(info["duration_seconds"], 60)
        tempo = f"{info['bpm']:g} bpm"
        if info["tempo_changes"]:
            lo, hi = info["bpm_range"]
            tempo += f" ({info['tempo_changes']} changes, {lo:g}-{hi:g} bpm)"
        lines = [
            f"{path}",
            f"  length      {int(minutes)}:{seconds:04.1f} ({info['duration_seconds']:.1f} s)",
            f"  tempo       {tempo}",
            f"  meter       {info['time_signature']}"
            + (f" ({info['time_signature_changes']} changes)" if info["time_signature_changes"] else ""),
        ]
        if info["key_signature"]:
            lines.append(f"  key sig.    {info['key_signature']}")
        lines.append(f"  notes       {info['notes']} in {info['tracks']} tracks")
        for inst in info["instruments"]:
            lines.append(f"  instrument  {inst['name']:<28} {inst['notes']:>6} notes")
        print("\n".join(lines))
    return EXIT_ERROR if failed else 0


def cmd_example(args: argparse.Namespace) -> int:
    from midilm.music.examples import example_piece
    from midilm.music.midi_io import write_midi

    out = write_midi(example_piece(), args.output)
    print(f"wrote {out}", file=sys.stderr)
    return 0


# --- plumbing ---------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and exit 2), not a usage block."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="midilm", description="Language models that read and write MIDI.")
    parser.add_argument("--version", action="version", version=f"midilm {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("tokenize", help="encode MIDI files to AMT events (the reference's midi_to_events)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per file per line")
    p.add_argument("--lines", metavar="OUT.txt", help="also write 1,024-id training lines of all files")
    p.add_argument("--augment", type=int, default=1, help="augmentation factor for --lines (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tokenize)

    p = sub.add_parser("detokenize", help="decode a JSON list of AMT ids to a MIDI file (never fails on ids)")
    p.add_argument("tokens", metavar="TOKENS.json")
    p.add_argument("-o", "--output", required=True, metavar="OUT.mid")
    p.add_argument("--bpm", type=bpm, default=120.0, help="tempo grid to write the notes on (default 120)")
    p.add_argument("--meter", type=meter, default=(4, 4), help="time signature, e.g. 3/4 (default 4/4)")
    p.add_argument("--velocity", type=int, default=72, choices=range(1, 128), metavar="1..127")
    p.add_argument("--text-vocab-size", type=int, default=None,
                   help="ids are from a merged LLM vocabulary (e.g. 128256 for Llama 3)")
    p.set_defaults(func=cmd_detokenize)

    p = sub.add_parser("info", help="summarise MIDI files: length, tempo, meter, instruments, notes")
    p.add_argument("files", nargs="+", metavar="FILE.mid")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("example", help="write the bundled example MIDI file")
    p.add_argument("-o", "--output", required=True, metavar="OUT.mid")
    p.set_defaults(func=cmd_example)

    for register in _plugin_registrars():
        register(sub)
    return parser


def _plugin_registrars() -> list[Callable]:
    """Sub-commands of the heavier sub-packages, registered only when their module imports."""
    registrars = []
    for module in ("midilm.annotate.cli", "midilm.generate.cli", "midilm.train.cli", "midilm.evaluate.cli",
                   "midilm.serve.cli", "midilm.models.cli", "midilm.understand.cli"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError:
            continue
        registrars.append(mod.register)
    return registrars


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("midilm")
    except Exception:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from midilm.errors import MidilmError

    try:
        return args.func(args)
    except (CliError, MidilmError, ValueError, OSError) as e:
        if os.environ.get("MIDILM_DEBUG"):
            raise
        print(f"midilm: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("midilm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug of ours: still one line, with how to see the trace
        if os.environ.get("MIDILM_DEBUG"):
            raise
        print(f"midilm: internal error: {type(e).__name__}: {e} (set MIDILM_DEBUG=1 for the trace)",
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
