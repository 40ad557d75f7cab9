"""Songs per second for the full annotation (read + piece + 3 clips, everything) on POP909, next to the
naive path: music21 parsing the same songs and running its key analysis (Krumhansl-Schmuckler) only.

    python benchmarks/bench_analysis.py [--songs 200] [--baseline-songs 10]
"""

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


def music21_key(path: str) -> str:
    import music21

    score = music21.converter.parse(path)
    return str(score.analyze("key"))


def run_music21(paths: list[str]) -> float:
    start = time.perf_counter()
    for p in paths:
        music21_key(p)
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, default=DATA, help="the POP909 folder holding NNN/NNN.mid")
    ap.add_argument("--songs", type=int, default=200, help="how many songs (first N by number)")
    ap.add_argument("--workers", default="1,2", help="comma-separated process counts")
    ap.add_argument("--baseline-songs", type=int, default=10, help="songs for the (slow) music21 baseline")
    args = ap.parse_args()
    paths = sorted(str(p) for p in args.data_dir.glob("[0-9][0-9][0-9]/[0-9][0-9][0-9].mid"))[: args.songs]
    if not paths:
        raise SystemExit(f"no POP909 songs under {args.data_dir}")
    analyse_file(paths[0])  # warm imports and caches outside the clock
    ours = {}
    for w in (int(x) for x in args.workers.split(",")):
        ours[w] = run(paths, w)
        print(f"ours, full analysis, {len(paths)} POP909 songs, {w} process(es): {ours[w]:.1f} songs/s")
    if args.baseline_songs:
        music21_key(paths[0])
        base = run_music21(paths[: args.baseline_songs])
        print(f"music21 parse + key only, {args.baseline_songs} songs, 1 process: {base:.2f} songs/s")
        print(f"ratio (ours full, 1 process / music21 key only): {ours.get(1, max(ours.values())) / base:.0f}x")


if __name__ == "__main__":
    main()
