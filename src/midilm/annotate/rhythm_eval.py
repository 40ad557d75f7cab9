"""Meter accuracy of rhythm.py against human labels: Nottingham's meter column and POP909's beat files.

Scoring
-------
* Nottingham: a prediction is right when it is in the label's meter class: simple duple (2/4, 4/4, 2/2),
  simple triple (3/4, 3/2, 3/8), compound duple (6/8, 12/8, 6/4) or compound triple (9/8); the notation
  choice inside a class (2/2 vs 4/4) is not audible in MIDI. Exact matches are reported too.
* POP909: the label is the number of beats per bar in `beat_midi.txt` (the spacing of the downbeat
  flags in the second column: 2 or 3). The third column marks every other bar, so the dataset does not
  tell 2/4 from 4/4: a prediction is right when it is triple (3/4, 3/8, 3/2, 9/8) exactly when the label
  is 3 beats.
* Splits: "heldout" is POP909 songs whose number is a multiple of 10 and Nottingham rows of index.csv
  whose 0-based data-row index is a multiple of 10; "train" the rest; "all" both.
* Modes: "pipeline" is `estimate_meter` as shipped (file signature where trusted); "estimator" ignores
  the file's signatures, measuring the estimate alone.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

import numpy as np

from midilm.annotate.rhythm import estimate_meter
from midilm.errors import MidiReadError
from midilm.music.midi_io import read_midi

METER_CLASS = {
    "2/4": "simple duple", "4/4": "simple duple", "2/2": "simple duple", "4/2": "simple duple",
    "3/4": "simple triple", "3/2": "simple triple", "3/8": "simple triple",
    "6/8": "compound duple", "12/8": "compound duple", "6/4": "compound duple",
    "9/8": "compound triple",
}  # fmt: skip
TRIPLE = {"3/4", "3/2", "3/8", "9/8"}


def default_data_dir() -> Path:
    """../shared/data beside the repository (where the project keeps its data)."""
    return Path(__file__).resolve().parents[4] / "shared" / "data"


def _in_split(index: int, split: str) -> bool:
    """`split`: "test" (the held-out rows; "heldout" is the same), "train" or "all"."""
    if split == "all":
        return True
    if split not in ("test", "heldout", "train"):
        raise ValueError(f"split must be test, train or all, got {split!r}")
    held = index % 10 == 0
    return held if split in ("test", "heldout") else not held


def _result(rights: list[bool], confusions: Counter, examples: list[str], exact: list[bool] | None = None) -> dict:
    out = {
        "accuracy": float(np.mean(rights)) if rights else float("nan"),
        "n": len(rights),
        "confusions": [{"label": a, "predicted": b, "count": c} for (a, b), c in confusions.most_common(10)],
        "examples": examples[:10],
    }
    if exact is not None:
        out["exact_accuracy"] = float(np.mean(exact)) if exact else float("nan")
    return out


def meter_accuracy_nottingham(data_dir: str | Path | None = None, split: str = "test",
                              mode: str = "pipeline") -> dict:
    """Meter-class accuracy on Nottingham (see the module docstring for the scoring)."""
    root = Path(data_dir or default_data_dir()) / "nottingham"
    rights: list[bool] = []
    exact: list[bool] = []
    confusions: Counter = Counter()
    examples: list[str] = []
    with open(root / "index.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
        if not _in_split(i, split) or row["meter"] not in METER_CLASS:
            continue
        try:
            piece = read_midi(root / row["midi_full"])
        except MidiReadError:
            continue
        meter, _ = estimate_meter(piece, trust_file=mode == "pipeline")
        ok = METER_CLASS.get(meter) == METER_CLASS[row["meter"]]
        rights.append(ok)
        exact.append(meter == row["meter"])
        if not ok:
            confusions[(row["meter"], meter)] += 1
            examples.append(f"{row['midi_full']}: {row['meter']} -> {meter}")
    return _result(rights, confusions, examples, exact)


def pop909_beats_per_bar(beat_file: str | Path) -> int:
    """Beats per bar from a POP909 beat file: the most common spacing of the downbeat flags."""
    table = np.loadtxt(beat_file, ndmin=2)
    down = np.flatnonzero(table[:, 1] == 1)
    if len(down) < 2:
        return 0
    return int(np.bincount(np.diff(down)).argmax())


def meter_accuracy_pop909(data_dir: str | Path | None = None, split: str = "test",
                          mode: str = "pipeline") -> dict:
    """Duple/triple accuracy on POP909 against beats per bar in beat_midi.txt."""
    root = Path(data_dir or default_data_dir()) / "pop909" / "POP909"
    rights: list[bool] = []
    confusions: Counter = Counter()
    examples: list[str] = []
    for song in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        if not _in_split(int(song.name), split):
            continue
        beats = pop909_beats_per_bar(song / "beat_midi.txt")
        if beats not in (2, 3, 4):
            continue
        try:
            piece = read_midi(song / f"{song.name}.mid")
        except MidiReadError:
            continue
        meter, _ = estimate_meter(piece, trust_file=mode == "pipeline")
        ok = (meter in TRIPLE) == (beats == 3)
        rights.append(ok)
        if not ok:
            confusions[(f"{beats} beats", meter)] += 1
            examples.append(f"{song.name}: {beats} beats -> {meter}")
    return _result(rights, confusions, examples)


def main(argv: list[str] | None = None) -> None:
    """Print meter accuracy per data set, split and mode."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="the shared data folder (default ../shared/data)")
    ap.add_argument("--splits", default="heldout,all")
    ap.add_argument("--modes", default="pipeline,estimator")
    args = ap.parse_args(argv)
    print(f"{'data set':<11} {'split':<8} {'mode':<10} {'n':>5} {'accuracy':>9} {'exact':>7}  top confusions")
    for name, fn in (("Nottingham", meter_accuracy_nottingham), ("POP909", meter_accuracy_pop909)):
        for split in args.splits.split(","):
            for mode in args.modes.split(","):
                r = fn(args.data_dir, split, mode)
                exact = f"{r['exact_accuracy']:.3f}" if "exact_accuracy" in r else "-"
                conf = ", ".join(f"{c['label']}->{c['predicted']} x{c['count']}" for c in r["confusions"][:3])
                print(f"{name:<11} {split:<8} {mode:<10} {r['n']:>5} {r['accuracy']:>9.3f} {exact:>7}  {conf}")


if __name__ == "__main__":
    main()
