"""MusicXML to MIDI: midilm.music.musicxml against music21's parser and MIDI writer (the path it replaced).

For each score, CPU seconds of this process (time.process_time, so other jobs on the machine matter less):

- music21 path: `converter.parse(path, forceSource=True)` then `score.write("midi")`, which expands repeats
  and strips ties before writing; the repeat expansion is also timed on its own (`expandRepeats`) to show
  where the writer's cost goes;
- ours: `read_musicxml(path)` then `midi_bytes(piece)` (symusic writes the file).

Usage: python benchmarks/bench_musicxml.py [--quartets 4] [--max-kb 100] [--json OUT]
Needs ../shared/data/openscore-quartets (the corpus files come with music21).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUARTETS = Path(os.environ.get("MIDILM_SHARED_DATA", REPO.parent / "shared" / "data")) / "openscore-quartets"
CORPUS_WORKS = ("bach/bwv66.6.mxl", "haydn/opus1no1/movement1.mxl", "mozart/k80/movement1.mxl",
                "beethoven/opus18no1/movement2.mxl", "schumann_clara/polonaise_op1n1.mxl", "joplin/maple_leaf_rag.mxl")


def pick_quartets(n: int, max_kb: int) -> list[Path]:
    """n scores spread over the sizes up to max_kb (music21 needs about 0.25 CPU s per KB)."""
    files = sorted((p for p in QUARTETS.glob("scores/**/*.mxl") if p.stat().st_size <= max_kb * 1024
                    and "Saint-Georges" not in str(p)),  # music21 cannot expand their repeats
                   key=lambda p: p.stat().st_size)
    if n <= 0 or not files:
        return []
    step = max(1, len(files) // n)
    return files[::step][:n]


class OverLimit(Exception):
    pass


def cpu(fn, limit: float | None = None):
    """(CPU seconds, result) of fn(); with `limit`, (None, None) once fn has used that many CPU seconds
    (music21's MIDI writer takes more than 10 CPU minutes on some 70 KB scores)."""
    def stop(signum, frame):
        signal.setitimer(signal.ITIMER_PROF, 0.01)  # again until it escapes music21's broad excepts
        raise OverLimit

    previous = signal.signal(signal.SIGPROF, stop) if limit else None
    if limit:
        signal.setitimer(signal.ITIMER_PROF, limit)
    t = time.process_time()
    try:
        out = fn()
    except OverLimit:
        return None, None
    finally:
        if limit:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, previous)
    return time.process_time() - t, out


def bench_file(path: Path, limit: float) -> dict:
    from music21 import converter

    from midilm.music.midi_io import midi_bytes
    from midilm.music.musicxml import read_musicxml

    ours_read, piece = cpu(lambda: read_musicxml(path))
    ours_write, data = cpu(lambda: midi_bytes(piece))
    parse, score = cpu(lambda: converter.parse(str(path), forceSource=True))
    repeats, _ = cpu(lambda: score.expandRepeats(), limit)
    with tempfile.TemporaryDirectory() as tmp:
        write, _ = cpu(lambda: score.write("midi", fp=str(Path(tmp) / "m21.mid")), limit)
    return {"file": str(path), "kb": round(path.stat().st_size / 1024, 1), "notes": len(piece),
            "music21_parse_s": round(parse, 3), "music21_expand_repeats_s": _round(repeats),
            "music21_write_midi_s": _round(write), "ours_read_s": round(ours_read, 4),
            "ours_write_s": round(ours_write, 4), "midi_bytes": len(data)}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _s(x: float | None, limit: float) -> str:
    return f"> {limit:g} s" if x is None else f"{x:.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quartets", type=int, default=4)
    ap.add_argument("--max-kb", type=int, default=100)
    ap.add_argument("--m21-limit", type=float, default=60.0,
                    help="CPU seconds allowed to music21's writer (and repeat expansion) per score")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from music21 import common

    corpus = Path(common.getCorpusFilePath())
    files = pick_quartets(args.quartets, args.max_kb) + [corpus / w for w in CORPUS_WORKS]
    print("| score | KB | notes | music21 parse | music21 MIDI writer (its repeat expansion) | ours: read + write "
          "| ratio |")
    print("|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for path in files:
        r = bench_file(path, args.m21_limit)
        rows.append(r)
        mine = r["ours_read_s"] + r["ours_write_s"]
        write = r["music21_write_midi_s"]
        ratio = "-" if write is None else f"{(r['music21_parse_s'] + write) / mine:.0f}x"
        name = "/".join(Path(r["file"]).parts[-3:])
        print(f"| {name} | {r['kb']} | {r['notes']} | {r['music21_parse_s']:.2f} s | {_s(write, args.m21_limit)} "
              f"({_s(r['music21_expand_repeats_s'], args.m21_limit)}) | {mine:.3f} s | {ratio} |", flush=True)
    done = [r for r in rows if r["music21_write_midi_s"] is not None]  # the ratio over scores music21 finished
    m21 = sum(r["music21_parse_s"] + r["music21_write_midi_s"] for r in done)
    ours = sum(r["ours_read_s"] + r["ours_write_s"] for r in done)
    kb = sum(r["kb"] for r in done)
    parse = sum(r["music21_parse_s"] for r in done)
    print(f"\n{len(done)} of {len(rows)} scores finished by music21 within {args.m21_limit:g} CPU s, {kb:.0f} KB: "
          f"music21 {m21:.1f} CPU s ({m21 / kb:.3f} s/KB; parse {parse:.1f} s), ours {ours:.2f} CPU s "
          f"({ours / kb * 1000:.1f} ms/KB): {m21 / ours:.0f}x")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "music21_s": m21, "ours_s": ours}, indent=1) + "\n")


if __name__ == "__main__":
    main()
