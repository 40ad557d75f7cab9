"""Songs per second for the full annotation (read + piece + 3 clips, everything) on POP909."""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from midilm.annotate.analyze import analyze_with_clips
from midilm.music.midi_io import read_midi

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pop909" / "POP909"


def analyse_file(path: str) -> int:
    piece = read_midi(path)
    _, clips = analyze_with_clips(piece)
    return len(clips)


def run(paths: list[str], workers: int) -> float:
    """Songs per second with `workers` processes (1 = in this process)."""
    start = time.perf_counter()
    if workers == 1:
        for p in paths:
            analyse_file(p)
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(analyse_file, paths, chunksize=8))
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, default=DATA, help="the POP909 folder holding NNN/NNN.mid")
    ap.add_argument("--songs", type=int, default=200, help="how many songs (first N by number)")
    ap.add_argument("--workers", default="1,2", help="comma-separated process counts")
    args = ap.parse_args()
    paths = sorted(str(p) for p in args.data_dir.glob("[0-9][0-9][0-9]/[0-9][0-9][0-9].mid"))[: args.songs]
    if not paths:
        raise SystemExit(f"no POP909 songs under {args.data_dir}")
    analyse_file(paths[0])  # warm imports and caches outside the clock
    for w in (int(x) for x in args.workers.split(",")):
        print(f"{len(paths)} POP909 songs, {w} process(es): {run(paths, w):.1f} songs/s")


if __name__ == "__main__":
    main()
