"""Sub-commands of the annotation pipeline: `analyze`, `annotate accuracy` and `dataset build`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from midilm.cli_common import EXIT_ERROR, report_file_error


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _report(path: str, a: dict) -> str:
    """A readable analysis of one piece."""
    lines = [path]

    def row(label: str, value) -> None:
        if value not in (None, "", []):
            lines.append(f"  {label:<13} {value}")

    minutes, seconds = divmod(float(a.get("duration", 0.0)), 60)
    row("length", f"{int(minutes)}:{seconds:04.1f} ({a.get('duration_word', '')})")
    row("tempo", f"{a['bpm']:.0f} bpm, {a.get('tempo_word', '')} ({a.get('bpm_source', '')})")
    row("meter", f"{a.get('time_signature')} ({a.get('time_signature_source', '')})")
    row("key", f"{a.get('key')} (confidence {a.get('key_confidence', 0):.2f})")
    segs = a.get("key_segments") or []
    if len(segs) > 1:
        row("key changes", ", ".join(f"{s['key']} at {s['start']:.0f}s" for s in segs))
    chords = a.get("chords") or []
    if chords:
        row("chords", " ".join(c["label"] for c in chords[:16]) + (" ..." if len(chords) > 16 else ""))
    if a.get("chord_pattern"):
        row("pattern", f"{' - '.join(a['chord_pattern'])} (x{a.get('chord_pattern_count', 0)})")
    row("instruments", ", ".join(a.get("instruments") or []))
    row("texture", a.get("texture"))
    row("dynamics", f"{a.get('dynamics')} (mean velocity {a.get('velocity_mean', 0):.0f})")
    row("range", f"{a.get('pitch_low')} - {a.get('pitch_high')} ({a.get('register')})")
    row("density", f"{a.get('note_density', 0):.1f} notes/s, polyphony {a.get('polyphony', 0):.1f}")
    row("articulation", a.get("articulation"))
    row("rhythm", f"{a.get('note_value')}, syncopation {a.get('syncopation', 0):.2f}"
        + (", swing" if a.get("swing") else ""))
    row("contour", a.get("contour"))
    return "\n".join(lines)


def cmd_analyze(args: argparse.Namespace) -> int:
    from midilm.annotate.analyze import analyze_piece, analyze_with_clips
    from midilm.errors import MidilmError
    from midilm.music.midi_io import read_midi

    failed = 0
    for path in args.files:
        try:
            piece = read_midi(path)
            # with clips, one rhythm analysis serves the piece and its clips
            analysis, clips = analyze_with_clips(piece) if args.clips else (analyze_piece(piece), None)
        except MidilmError as e:
            failed += 1
            report_file_error(path, e, args.json)
            continue
        if args.json:
            record = {"path": path, **analysis}
            if clips is not None:
                record["clips"] = clips
            print(json.dumps(record, default=_json_default), flush=True)
        else:
            print(_report(path, analysis))
            for clip in clips or []:
                print(_report(f"  clip {clip.get('clip', '')} {clip.get('clip_start', 0):.0f}-"
                              f"{clip.get('clip_end', 0):.0f}s", clip))
    return EXIT_ERROR if failed else 0


def cmd_accuracy(args: argparse.Namespace) -> int:
    from midilm.annotate import harmony_eval, rhythm_eval

    data = Path(args.data)
    if not data.is_dir():
        raise FileNotFoundError(f"data folder not found: {data}")
    rows = []
    checks = [
        ("key", "POP909", harmony_eval.key_accuracy_pop909, 0.85),
        ("key", "Nottingham", harmony_eval.key_accuracy_nottingham, 0.85),
        ("chords", "POP909", harmony_eval.chord_accuracy_pop909, 0.70),
        ("meter", "POP909", rhythm_eval.meter_accuracy_pop909, 0.90),
        ("meter", "Nottingham", rhythm_eval.meter_accuracy_nottingham, 0.90),
    ]
    for what, dataset, fn, goal in checks:
        result = fn(data, split=args.split)
        rows.append({"what": what, "dataset": dataset, "split": args.split, "accuracy": result["accuracy"],
                     "n": result["n"], "goal": goal})
    if args.json:
        print(json.dumps(rows))
        return 0
    print("| what | data | split | accuracy | n | goal |\n|---|---|---|---|---|---|")
    for r in rows:
        mark = "met" if r["accuracy"] >= r["goal"] else "NOT met"
        print(f"| {r['what']} | {r['dataset']} | {r['split']} | {r['accuracy']:.3f} | {r['n']} | "
              f">= {r['goal']:.2f} ({mark}) |")
    return 0


def cmd_dataset_build(args: argparse.Namespace) -> int:
    from midilm.annotate.dataset import build_dataset
    from midilm.annotate.sources import sources_from_args

    sources = sources_from_args(args.sources)
    summary = build_dataset(sources, args.output, workers=args.workers, ray=args.ray, resume=not args.no_resume,
                            limit=args.limit, timeout=args.timeout, retry_failed=args.retry_failed)
    print(json.dumps(summary, indent=2, default=_json_default))
    return 0


def register(sub) -> None:
    p = sub.add_parser("analyze", help="analyse MIDI files: key, chords, tempo, meter, instruments, texture...")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per file per line")
    p.add_argument("--clips", action="store_true", help="also analyse three 20 s clips (start, middle, end)")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("annotate", help="annotation pipeline tools")
    asub = p.add_subparsers(dest="annotate_command", metavar="COMMAND", parser_class=type(p))
    q = asub.add_parser("accuracy", help="accuracy of key, chord and meter analysis against human labels")
    q.add_argument("--data", default=str(Path(__file__).resolve().parents[3].parent / "shared" / "data"),
                   help="folder holding pop909/ and nottingham/ (default ../shared/data)")
    q.add_argument("--split", choices=("test", "train", "all"), default="test",
                   help="held-out split (default), training split or all files")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_accuracy)

    p = sub.add_parser("dataset", help="build a MIDI-text dataset")
    dsub = p.add_subparsers(dest="dataset_command", metavar="COMMAND", parser_class=type(p))
    q = dsub.add_parser("build", help="annotate MIDI sources into a Parquet dataset (resumable)")
    q.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="a folder, or pop909:DIR, nottingham:DIR, music21[:SUBCORPUS], "
                        "giantmidi:DIR[,COMPOSERS.csv], lakh:DIR,CAPTIONS")
    q.add_argument("-o", "--output", required=True, metavar="OUT")
    q.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    q.add_argument("--ray", action="store_true", help="run the per-file work on Ray")
    q.add_argument("--no-resume", action="store_true", help="start again instead of skipping finished files")
    q.add_argument("--limit", type=int, default=None, help="at most N files per source (for trials)")
    q.add_argument("--timeout", type=float, default=120.0,
                   help="seconds per file, conversion included (default 120); slower files are logged and skipped")
    q.add_argument("--retry-failed", action="store_true", help="on resume, try files that failed before again")
    q.set_defaults(func=cmd_dataset_build)
