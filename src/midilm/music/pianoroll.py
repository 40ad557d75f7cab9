"""Piano-roll pictures of a Piece: notes as bars on a beat grid, one colour per instrument."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from midilm.music.gm import program_name


def pianoroll_png(piece, out_path: str | Path, title: str | None = None, max_seconds: float | None = None,
                  width: float = 12.0, height: float = 4.5) -> Path:
    """Draw the notes (x: seconds, y: pitch; drums as small marks at the bottom) and save a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height))
    draw_pianoroll(ax, piece, title=title, max_seconds=max_seconds)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def draw_pianoroll(ax, piece, title: str | None = None, max_seconds: float | None = None,
                   legend: bool = True) -> None:
    """Draw the notes of `piece` on a matplotlib Axes (for figures of several rolls side by side)."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    start, end = piece.start, piece.end
    if max_seconds is not None:
        keep = start < max_seconds
        start, end = start[keep], np.minimum(end[keep], max_seconds)
        pitch, program = piece.pitch[keep], piece.program[keep]
    else:
        pitch, program = piece.pitch, piece.program
    cmap = plt.get_cmap("tab10")
    programs = list(dict.fromkeys(program.tolist()))
    for k, prog in enumerate(programs):
        m = program == prog
        s, e, p = start[m], np.maximum(end[m], start[m] + 0.03), pitch[m].astype(float)
        if prog == 128:
            p = np.full_like(p, 18.0) + (pitch[m] % 12) * 0.5
        verts = [[(a, y - 0.4), (b, y - 0.4), (b, y + 0.4), (a, y + 0.4)] for a, b, y in zip(s, e, p)]
        ax.add_collection(PolyCollection(verts, facecolors=cmap(k % 10), edgecolors="none", alpha=0.85,
                                         label=program_name(int(prog))))
    total = float(end.max()) if len(end) else 1.0
    beats = piece.tempo_map.seconds(np.arange(0, piece.tempo_map.ticks_at(total) + 1, piece.ticks_per_beat))
    num = piece.time_signature.numerator or 4
    for i, b in enumerate(beats):
        ax.axvline(b, color="0.75" if i % num else "0.45", lw=0.4 if i % num else 0.8, zorder=0)
    lo = 14 if 128 in programs else (int(pitch.min()) - 2 if len(pitch) else 40)
    hi = int(pitch[program != 128].max()) + 2 if np.any(program != 128) else 90
    ax.set_xlim(0, max(total, 1.0))
    ax.set_ylim(lo, max(hi, lo + 12))
    ax.set_xlabel("seconds")
    ax.set_ylabel("pitch (MIDI)")
    if title:
        ax.set_title(title, fontsize=10)
    if programs and legend:
        ax.legend(loc="upper right", fontsize=7, ncol=min(len(programs), 4), framealpha=0.8)
