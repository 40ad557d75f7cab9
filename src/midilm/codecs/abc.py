"""MIDI -> ABC notation text for the ABC baseline of MIDI understanding, through `midi2abc` (Debian `abcmidi`).

The MIDI-LLaMA paper compares its encoder against an LLM reading the music as ABC text. We write the piece
(or a clip of it, moved to start at a bar line) to a temporary file, run `midi2abc` under a time limit, and
keep the header fields and the music: `T:` (midi2abc fills it with the file path, which would leak names)
and comment lines are dropped, line continuations are joined, and the text is cut at a bar line to a
character budget so a prompt stays within the model's context.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from midilm.errors import MidilmError
from midilm.music.midi_io import write_midi
from midilm.music.piece import Piece

MIDI2ABC_TIMEOUT = 20.0
DEFAULT_MAX_CHARS = 3000


class AbcError(MidilmError):
    """midi2abc is missing, failed or ran too long."""


def midi2abc_path() -> str:
    path = shutil.which("midi2abc")
    if path is None:
        raise AbcError("midi2abc not found: install the Debian package abcmidi (apt-get install abcmidi)")
    return path


def clean_abc(text: str, max_chars: int | None = DEFAULT_MAX_CHARS) -> str:
    """Drop the title and comments, join continued lines, and cut at a bar line within `max_chars`."""
    lines = []
    for raw in text.splitlines():
        # `%%MIDI program` is a directive, not a comment: it carries the instrument
        line = raw.rstrip() if raw.startswith("%%MIDI program") else raw.split("%", 1)[0].rstrip()
        if line and not line.startswith("T:"):
            lines.append(line)
    k = next((i for i, x in enumerate(lines) if x.startswith("K:")), -1)
    header, voices = lines[: k + 1], [[]]
    for x in lines[k + 1 :]:
        if x.startswith("V:") and voices[-1]:
            voices.append([])
        voices[-1].append(x[:-1].rstrip() if x.endswith("\\") else x)
    body = "\n".join(re.sub(r"[ \t]+", " ", " ".join(v)).strip() for v in voices if v)
    out = "\n".join(header) + "\n" + body
    if max_chars is not None and len(out) > max_chars:
        cut = out.rfind("|", 0, max_chars)
        out = out[: cut + 1] if cut > len("\n".join(header)) else out[:max_chars]
    return out


def piece_to_abc(piece: Piece, max_chars: int | None = DEFAULT_MAX_CHARS, timeout: float = MIDI2ABC_TIMEOUT) -> str:
    """ABC text for a whole piece (cleaned as `clean_abc`)."""
    exe = midi2abc_path()
    with tempfile.TemporaryDirectory(prefix="midilm-abc-") as tmp:
        midi = write_midi(piece, Path(tmp) / "in.mid")
        try:
            run = subprocess.run([exe, "-f", str(midi), "-s"], capture_output=True, timeout=timeout,
                                 env={**os.environ, "LC_ALL": "C"}, check=False)
        except subprocess.TimeoutExpired:
            raise AbcError(f"midi2abc ran over {timeout:.0f} s") from None
    text = run.stdout.decode("latin-1")
    if run.returncode != 0 or "K:" not in text:
        detail = run.stderr.decode("latin-1").strip().splitlines()[:1]
        raise AbcError(f"midi2abc failed (exit {run.returncode}){': ' + detail[0] if detail else ''}")
    return clean_abc(text, max_chars)


def clip_to_abc(piece: Piece, start: float, end: float, max_chars: int | None = DEFAULT_MAX_CHARS) -> str:
    """ABC text for the notes starting in [start, end) seconds, moved to begin at a bar line."""
    return piece_to_abc(piece.excerpt(start, end), max_chars)
