"""AMT codec speed: our encoder against the mido-based reference path, as whole processes, and decoding.

    python benchmarks/bench_codec.py [--data ../shared/data] [--limit 909] [--repeat 3]

Encoding: both sides run as fresh processes over the same POP909 songs (interpreter start and imports
included) and print how many events they made; we report files per second and the ratio. Decoding:
2,046 ids (682 notes, MIDI-LLM's sample length) cut from a real song, to notes and to MIDI bytes,
median over many runs, next to the mido-based decoder.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

OURS = "import sys; from midilm.codecs.amt.encode import encode_midi; " \
       "print(sum(len(encode_midi(p)) // 3 for p in sys.argv[1:]))"


def time_process(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO).stdout.strip()
    return time.perf_counter() - t, out


def bench_encode(files: list[str], repeat: int) -> dict:
    ours_t, base_t = [], []
    for _ in range(repeat):
        t, ours_n = time_process([sys.executable, "-c", OURS, *files])
        ours_t.append(t)
        t, base_n = time_process([sys.executable, str(REPO / "benchmarks" / "mido_baseline.py"), *files])
        base_t.append(t)
    if ours_n != base_n:
        raise SystemExit(f"event counts differ: ours {ours_n}, baseline {base_n}")
    ours, base = min(ours_t), min(base_t)
    return {"files": len(files), "events": int(ours_n), "ours_s": ours, "baseline_s": base,
            "ours_files_per_s": len(files) / ours, "baseline_files_per_s": len(files) / base, "ratio": base / ours}


def bench_decode(song: str, runs: int = 200) -> dict:
    sys.path.insert(0, str(REPO))
    from benchmarks.mido_baseline import events_to_midi
    from midilm.codecs.amt.decode import decode_tokens
    from midilm.codecs.amt.encode import encode_midi
    from midilm.music.midi_io import midi_bytes

    tokens = encode_midi(song)[:2046]
    assert len(tokens) == 2046 and max(tokens[0::3]) < 10000

    def median_ms(fn, n):
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return 1000 * statistics.median(times)

    return {
        "ids": len(tokens),
        "notes_ms": median_ms(lambda: decode_tokens(tokens), runs),
        "midi_bytes_ms": median_ms(lambda: midi_bytes(decode_tokens(tokens)[0]), runs),
        "baseline_ms": median_ms(lambda: events_to_midi(tokens), max(runs // 10, 5)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--limit", type=int, default=909, help="POP909 songs to encode (default all)")
    ap.add_argument("--repeat", type=int, default=3, help="take the fastest of N process runs")
    args = ap.parse_args()
    songs = sorted(str(p) for p in Path(args.data, "pop909", "POP909").glob("*/[0-9][0-9][0-9].mid"))[: args.limit]
    if not songs:
        raise SystemExit(f"no POP909 songs under {args.data}")
    enc = bench_encode(songs, args.repeat)
    dec = bench_decode(songs[0])
    print("| benchmark | ours | mido-based baseline | ratio |")
    print("|---|---|---|---|")
    print(f"| encode {enc['files']} POP909 songs, whole process | {enc['ours_s']:.2f} s "
          f"({enc['ours_files_per_s']:.0f} files/s) | {enc['baseline_s']:.2f} s "
          f"({enc['baseline_files_per_s']:.1f} files/s) | {enc['ratio']:.1f}x |")
    print(f"| decode {dec['ids']} ids to notes | {dec['notes_ms']:.2f} ms | - | - |")
    print(f"| decode {dec['ids']} ids to MIDI bytes | {dec['midi_bytes_ms']:.2f} ms | {dec['baseline_ms']:.2f} ms "
          f"(mido objects, not yet bytes) | {dec['baseline_ms'] / dec['midi_bytes_ms']:.1f}x |")


if __name__ == "__main__":
    main()
