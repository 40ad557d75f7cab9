"""One figure of piano rolls: a row per prompt, a column per folder of MIDI files named `<id>.mid`.

Used for docs/pianorolls_heldout.png (the same held-out prompts before and after, next to the real pieces):

    python scripts/pianoroll_grid.py --prompts P.jsonl --column "v0 alone=BEFORE" --column "v1 steered=AFTER" \
        --column "real piece=REFS" --seconds 30 -o docs/pianorolls_heldout.png
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from midilm.music.midi_io import read_midi  # noqa: E402
from midilm.music.pianoroll import draw_pianoroll  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", required=True, help="JSONL with one {id, prompt} per row, in figure order")
    ap.add_argument("--column", action="append", required=True, metavar="LABEL=DIR")
    ap.add_argument("--seconds", type=float, default=30.0, help="draw only the first SECONDS of each piece")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()

    rows = [json.loads(line) for line in Path(args.prompts).read_text().splitlines() if line.strip()]
    columns = [c.split("=", 1) for c in args.column]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(5.2 * len(columns), 2.6 * len(rows)),
                             squeeze=False)
    for r, row in enumerate(rows):
        for c, (label, folder) in enumerate(columns):
            ax = axes[r][c]
            path = Path(folder) / f"{row['id']}.mid"
            if path.is_file():
                draw_pianoroll(ax, read_midi(path), max_seconds=args.seconds, legend=c == len(columns) - 1)
            else:
                ax.text(0.5, 0.5, "missing", ha="center", transform=ax.transAxes)
            ax.set_xlabel("")
            if r == 0:
                ax.set_title(label, fontsize=11, fontweight="bold")
            if c == 0:
                ax.set_ylabel("\n".join(textwrap.wrap(row["prompt"], 38)[:4]) + " ...", fontsize=6.5)
    fig.tight_layout()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=72)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
