"""Score `harmony` against human labels: keys on POP909 and Nottingham, chords on POP909.

Splits follow shared/data/README.md: the held-out ("test") POP909 songs are the numbers divisible by 10,
the held-out Nottingham tunes the index.csv data rows (from 0) divisible by 10; "train" is the rest,
"all" both. Label conventions:

- POP909 key: `key_audio.txt` lists key regions (`Eb:maj`, `C#:min`, ...); a song's global key is the
  one covering the most time. Keys compare by pitch class and mode (enharmonics are equal).
- Nottingham key: the `key` column (the ABC K: field, first key of the tune: `G`, `Am`, `Bb`...). This
  data has no modal keys, but any that appear map by the quality of their third, keeping the tonic:
  dorian, phrygian, aeolian and locrian are minor; ionian, lydian and mixolydian are major.
- POP909 chords: `chord_midi.txt`, compared on a 10 ms grid over the labelled span with estimated
  chords cut at the song's `beat_midi.txt` beats. Each label reduces to root + major/minor triad the
  MIREX "majmin" way (maj, 7, maj7, maj6, 9 -> major; min, min7, min6, minmaj7, min9 -> minor).
  `accuracy` counts only time whose label reduces to major/minor: N (no chord) and sus/dim/aug/hdim
  time are left out of it. `accuracy_with_n` also scores N time, where only an estimated N agrees.
  An estimated sus/dim/aug/N chord never agrees with a major/minor label.

The key model's weights are fitted here (`fit_key_weights`) on the training splits only.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from midilm.annotate import harmony
from midilm.music.midi_io import read_midi
from midilm.music.piece import Piece

SPLITS = ("test", "train", "all")
_PC = {name: pc for pc, name in enumerate(harmony.PC_NAMES)}
_PC.update({"Db": 1, "D#": 3, "Gb": 6, "G#": 8, "A#": 10, "Cb": 11, "B#": 0, "E#": 5, "Fb": 4})
_MAJ_QUALITIES = {"maj", "7", "maj7", "maj6", "9", "maj9"}
_MIN_QUALITIES = {"min", "min7", "min6", "minmaj7", "min9"}
Key = tuple[int, int]  # tonic pitch class, mode (0 major, 1 minor)


def default_data_dir() -> Path:
    """$MIDILM_SHARED_DATA, else shared/data beside a source checkout."""
    env = os.environ.get("MIDILM_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[4] / "shared" / "data"


def _in_split(index: int, split: str) -> bool:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return split == "all" or (index % 10 == 0) == (split == "test")


def key_text(key: Key) -> str:
    return f"{harmony.PC_NAMES[key[0]]} {harmony.MODES[key[1]]}"


def parse_harte_key(text: str) -> Key:
    """'Eb:maj' / 'C#:min' (POP909 key_audio.txt) -> (pitch class, mode)."""
    tonic, _, mode = text.strip().partition(":")
    return _PC[tonic], int(mode.startswith("min"))


def parse_abc_key(text: str) -> Key:
    """ABC key field ('G', 'Am', 'F#m', 'Ador', 'D mix') -> (pitch class, mode); modes map by their third."""
    t = text.strip()
    tonic = t[0].upper() + (t[1] if len(t) > 1 and t[1] in "#b" else "")
    mode = t[len(tonic):].strip().lower()
    if not mode or mode.startswith(("maj", "ion", "lyd", "mix")):
        return _PC[tonic], 0
    if mode == "m" or mode.startswith(("min", "dor", "phr", "aeo", "loc")):
        return _PC[tonic], 1
    raise ValueError(f"unknown key {text!r}")


def pop909_key_label(song_dir: Path) -> Key:
    """The key covering the most time in key_audio.txt."""
    time_in: Counter[Key] = Counter()
    for line in (song_dir / "key_audio.txt").read_text().split("\n"):
        parts = line.split()
        if len(parts) == 3:
            time_in[parse_harte_key(parts[2])] += float(parts[1]) - float(parts[0])
    return time_in.most_common(1)[0][0]


def pop909_songs(data_dir: Path, split: str) -> Iterator[tuple[int, Path]]:
    root = Path(data_dir) / "pop909" / "POP909"
    for song_dir in sorted(p for p in root.iterdir() if p.name.isdigit()):
        number = int(song_dir.name)
        if _in_split(number, split):
            yield number, song_dir


def nottingham_tunes(data_dir: Path, split: str) -> Iterator[tuple[int, dict]]:
    folder = Path(data_dir) / "nottingham"
    with open(folder / "index.csv", newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            if _in_split(i, split):
                yield i, row


def _score_keys(items: list[tuple[str, Piece, Key]],
                estimate: Callable[[Piece], Key]) -> dict:
    errors: Counter[str] = Counter()
    examples = []
    correct = 0
    seconds = 0.0
    for name, piece, label in items:
        t = time.perf_counter()
        guess = estimate(piece)
        seconds += time.perf_counter() - t
        if guess == label:
            correct += 1
            continue
        errors[_relation(guess, label)] += 1
        if len(examples) < 5:
            examples.append({"item": name, "label": key_text(label), "estimate": key_text(guess)})
    n = len(items)
    return {"accuracy": correct / n if n else float("nan"), "n": n, "errors": dict(errors.most_common()),
            "confusions": examples, "ms_per_item": 1000 * seconds / max(n, 1)}


def _relation(guess: Key, label: Key) -> str:
    """Name the error: relative, parallel, fifth... (what a key estimator typically confuses)."""
    up = (guess[0] - label[0]) % 12
    if guess[1] != label[1]:
        if (label[1] == 1 and up == 3) or (label[1] == 0 and up == 9):
            return "relative"
        return "parallel" if up == 0 else "other"
    return {7: "fifth up", 5: "fifth down"}.get(up, "other")


def _estimate_key(piece: Piece) -> Key:
    k = harmony.estimate_key(piece)
    return k.tonic_pc, harmony.MODES.index(k.mode)


def _pop909_key_items(data_dir: Path, split: str, limit: int | None = None) -> list[tuple[str, Piece, Key]]:
    songs = list(pop909_songs(data_dir, split))[:limit]
    return [(f"pop909/{n:03d}", read_midi(d / f"{n:03d}.mid"), pop909_key_label(d)) for n, d in songs]


def _nottingham_key_items(data_dir: Path, split: str,
                          limit: int | None = None) -> list[tuple[str, Piece, Key]]:
    folder = Path(data_dir) / "nottingham"
    rows = [row for _, row in nottingham_tunes(data_dir, split)][:limit]
    return [(f"nottingham/{row['midi_full']}", read_midi(folder / row["midi_full"]),
             parse_abc_key(row["key"])) for row in rows]


def key_accuracy_pop909(data_dir: str | Path | None = None, split: str = "test",
                        limit: int | None = None) -> dict:
    """Global key accuracy on POP909: {"accuracy", "n", "errors", "confusions", "ms_per_item"}."""
    items = _pop909_key_items(Path(data_dir or default_data_dir()), split, limit)
    return _score_keys(items, _estimate_key)


def key_accuracy_nottingham(data_dir: str | Path | None = None, split: str = "test",
                            limit: int | None = None) -> dict:
    """Key accuracy on the Nottingham tunes (key column of index.csv), same dict as for POP909."""
    items = _nottingham_key_items(Path(data_dir or default_data_dir()), split, limit)
    return _score_keys(items, _estimate_key)


# ---------------------------------------------------------------------------------------------------------
# chords

_N, _OTHER_REF, _OTHER_EST = -1, -2, -3


def chord_code(label: str, other: int = _OTHER_EST) -> int:
    """2 * root + (0 major, 1 minor) for labels that reduce to a major/minor triad; _N for no chord."""
    if label == "N":
        return _N
    root, _, quality = label.partition(":")
    quality = quality.split("/")[0] or "maj"
    if quality in _MAJ_QUALITIES:
        return 2 * _PC[root]
    if quality in _MIN_QUALITIES:
        return 2 * _PC[root] + 1
    return other


def _on_grid(segments: list[tuple[float, float, int]], grid: np.ndarray, missing: int) -> np.ndarray:
    """Code of the segment covering each grid time, `missing` where none does."""
    if not segments:
        return np.full(len(grid), missing)
    starts = np.array([s[0] for s in segments])
    ends = np.array([s[1] for s in segments])
    codes = np.array([s[2] for s in segments])
    i = np.clip(np.searchsorted(starts, grid, side="right") - 1, 0, len(segments) - 1)
    return np.where((grid >= starts[i]) & (grid < ends[i]), codes[i], missing)


def chord_agreement(reference: list[tuple[float, float, str]], estimate: list[dict],
                    step: float = 0.01) -> tuple[int, int, int, int]:
    """Grid points (majmin agreeing, majmin scored, agreeing incl. N, scored incl. N)."""
    ref = sorted((a, b, chord_code(c, _OTHER_REF)) for a, b, c in reference)
    grid = np.arange(ref[0][0], ref[-1][1], step)
    r = _on_grid(ref, grid, _OTHER_REF)
    # time the estimate leaves uncovered (silence around the music) counts as an estimated N
    e = _on_grid(sorted((d["start"], d["end"], chord_code(d["label"])) for d in estimate), grid, _N)
    scored = r >= 0
    with_n = scored | (r == _N)
    return (int((r[scored] == e[scored]).sum()), int(scored.sum()),
            int((r[with_n] == e[with_n]).sum()), int(with_n.sum()))


def _read_chord_labels(path: Path) -> list[tuple[float, float, str]]:
    rows = []
    for line in path.read_text().split("\n"):
        parts = line.split()
        if len(parts) == 3:
            rows.append((float(parts[0]), float(parts[1]), parts[2]))
    return rows


def chord_accuracy_pop909(data_dir: str | Path | None = None, split: str = "test",
                          limit: int | None = None) -> dict:
    """Chord (root + major/minor) accuracy against POP909 chord_midi.txt, estimated at its beats.

    Returns {"accuracy" (major/minor-labelled time only), "accuracy_with_n", "n" (songs),
    "hours_scored", "confusions" (most frequent label -> estimate swaps), "ms_per_item"}.
    """
    totals = np.zeros(4, dtype=np.int64)
    swaps: Counter[tuple[str, str]] = Counter()
    n = 0
    seconds = 0.0
    for number, song_dir in pop909_songs(Path(data_dir or default_data_dir()), split):
        if limit is not None and n >= limit:
            break
        piece = read_midi(song_dir / f"{number:03d}.mid")
        beats = np.loadtxt(song_dir / "beat_midi.txt", ndmin=2)[:, 0]
        t = time.perf_counter()
        estimate = harmony.estimate_chords(piece, beats)
        seconds += time.perf_counter() - t
        reference = _read_chord_labels(song_dir / "chord_midi.txt")
        totals += chord_agreement(reference, estimate)
        swaps.update(_swaps(reference, estimate))
        n += 1
    names = [f"{a} -> {b}" for (a, b), _ in swaps.most_common(5)]
    return {"accuracy": float(totals[0] / max(totals[1], 1)),
            "accuracy_with_n": float(totals[2] / max(totals[3], 1)),
            "n": n, "hours_scored": float(totals[1] * 0.01 / 3600), "confusions": names,
            "ms_per_item": 1000 * seconds / max(n, 1)}


def _swaps(reference: list[tuple[float, float, str]], estimate: list[dict]) -> Counter[tuple[str, str]]:
    """Reduced (label, estimate) pairs that disagree, counted at label midpoints."""
    out: Counter[tuple[str, str]] = Counter()
    starts = np.array([d["start"] for d in estimate])
    for a, b, label in reference:
        code = chord_code(label, _OTHER_REF)
        if code < 0 or not len(starts):
            continue
        i = max(int(np.searchsorted(starts, (a + b) / 2, side="right")) - 1, 0)
        guess = estimate[i]["label"]
        if chord_code(guess) != code:
            out[(_reduced_name(code), guess)] += 1
    return out


def _reduced_name(code: int) -> str:
    return f"{harmony.PC_NAMES[code // 2]}:{'min' if code % 2 else 'maj'}"


# ---------------------------------------------------------------------------------------------------------
# fitting the key model (training splits only)


def _softmax_fit(x: np.ndarray, y: np.ndarray, l2: float, steps: int, lr: float = 0.05) -> np.ndarray:
    """Multinomial logistic regression over 24 keys with one weight vector per mode (Adam, full batch).

    x: (n, 12, d) tonic-rotated features, y: 12 * mode + tonic. Returns (2, d + 1) weights, bias last.
    """
    n, _, d = x.shape
    w = np.zeros((2, d + 1))
    m1, m2 = np.zeros_like(w), np.zeros_like(w)
    rows = np.arange(n)
    for step in range(1, steps + 1):
        logits = np.concatenate([x @ w[0, :-1] + w[0, -1], x @ w[1, :-1] + w[1, -1]], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        p[rows, y] -= 1.0
        p /= n
        grad = np.empty_like(w)
        for mode in (0, 1):
            g = p[:, 12 * mode:12 * mode + 12]
            grad[mode, :-1] = np.einsum("nk,nkd->d", g, x) + l2 * w[mode, :-1]
            grad[mode, -1] = g.sum()
        m1 = 0.9 * m1 + 0.1 * grad
        m2 = 0.999 * m2 + 0.001 * grad**2
        w -= lr * (m1 / (1 - 0.9**step)) / (np.sqrt(m2 / (1 - 0.999**step)) + 1e-8)
    return w


def fit_key_weights(data_dir: str | Path | None = None, l2: float = 3e-2, steps: int = 800) -> np.ndarray:
    """Fit `harmony._KEY_WEIGHTS` on the POP909 and Nottingham training splits (held-out never read).

    Features are standardised for the fit and the scale folded back into the weights, so the module
    applies them to raw features.
    """
    data_dir = Path(data_dir or default_data_dir())
    items = _pop909_key_items(data_dir, "train") + _nottingham_key_items(data_dir, "train")
    x = np.array([harmony.key_features(piece) for _, piece, _ in items])
    y = np.array([12 * mode + tonic for _, _, (tonic, mode) in items])
    scale = x.reshape(-1, x.shape[2]).std(axis=0) + 1e-6
    w = _softmax_fit(x / scale, y, l2, steps)
    w[:, :-1] /= scale
    return w


def format_weights(w: np.ndarray) -> str:
    """The weights as a Python literal for harmony.py."""
    lines = ["_KEY_WEIGHTS = np.array(["]
    for row in w:
        lines.append("    [")
        values = [f"{v:.4g}" for v in row]
        for i in range(0, len(values), 10):
            lines.append("        " + ", ".join(values[i:i + 10]) + ",")
        lines.append("    ],")
    lines.append("])")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------


def timing(data_dir: str | Path | None = None, n: int = 30) -> dict:
    """Milliseconds per POP909 held-out song for key, key segments and chords (one core, files read)."""
    songs = list(pop909_songs(Path(data_dir or default_data_dir()), "test"))[:n]
    pieces = [read_midi(d / f"{k:03d}.mid") for k, d in songs]
    out = {}
    for name, fn in (("estimate_key", harmony.estimate_key), ("estimate_chords", harmony.estimate_chords),
                     ("key_segments", harmony.key_segments), ("analyze_harmony", harmony.analyze_harmony)):
        fn(pieces[0])
        t = time.perf_counter()
        for piece in pieces:
            fn(piece)
        out[name] = 1000 * (time.perf_counter() - t) / len(pieces)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=default_data_dir())
    ap.add_argument("--splits", nargs="+", default=["test", "all"], choices=SPLITS)
    ap.add_argument("--fit", action="store_true", help="refit key weights on the training splits, print them")
    args = ap.parse_args(argv)
    if args.fit:
        print(format_weights(fit_key_weights(args.data_dir)))
        return
    print(f"{'task':<22}{'split':<7}{'n':>6}{'accuracy':>10}{'with N':>8}{'ms/item':>9}  errors / confusions")
    for split in args.splits:
        for task, fn in (("key POP909", key_accuracy_pop909), ("key Nottingham", key_accuracy_nottingham),
                         ("chords POP909", chord_accuracy_pop909)):
            r = fn(args.data_dir, split)
            with_n = f"{r['accuracy_with_n']:.3f}" if "accuracy_with_n" in r else "-"
            detail = r.get("errors") or r["confusions"]
            print(f"{task:<22}{split:<7}{r['n']:>6}{r['accuracy']:>10.3f}{with_n:>8}"
                  f"{r['ms_per_item']:>9.1f}  {detail}")
    for name, ms in timing(args.data_dir).items():
        print(f"time per POP909 song, {name}: {ms:.1f} ms")


if __name__ == "__main__":
    main()
