"""Render MIDI to WAV with FluidSynth, always under a time limit and an output-size limit.

FluidSynth can hang on odd MIDI (22.9 GB of WAV once, on a file music21 wrote), so it runs as a child
process with RLIMIT_FSIZE set and a wall-clock timeout, and its input is our own re-written MIDI.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

from midilm.errors import MidilmError

SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)
SAMPLE_RATE = 44100


class AudioError(MidilmError):
    """Audio could not be rendered (no FluidSynth, no soundfont, timeout, size limit)."""


def find_soundfont(explicit: str | Path | None = None) -> Path:
    for cand in (explicit, os.environ.get("MIDILM_SOUNDFONT"), *SOUNDFONT_CANDIDATES):
        if cand and Path(cand).is_file():
            return Path(cand)
    raise AudioError("no General MIDI soundfont found: install Debian's timgm6mb-soundfont or set MIDILM_SOUNDFONT")


def render_wav(piece, out_path: str | Path, soundfont: str | Path | None = None, timeout: float = 120.0,
               max_seconds: float = 1800.0, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write `piece` (a Piece) as a 16-bit stereo WAV at `out_path`; returns the path."""
    from midilm.music.midi_io import write_midi

    exe = shutil.which("fluidsynth")
    if not exe:
        raise AudioError("fluidsynth is not installed (Debian package fluidsynth)")
    font = find_soundfont(soundfont)
    if piece.duration > max_seconds:
        raise AudioError(f"piece is {piece.duration:.0f} s long, over the {max_seconds:.0f} s render limit")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # 2 channels x 2 bytes; the tail and reverb get 10 s of slack
    limit = int((piece.duration + 10) * sample_rate * 4) + (1 << 20)

    def limit_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with tempfile.TemporaryDirectory(prefix="midilm-render-") as tmp:
        midi = write_midi(piece, Path(tmp) / "in.mid")
        wav = Path(tmp) / "out.wav"
        cmd = [exe, "-ni", "-q", "-r", str(sample_rate), "-F", str(wav), str(font), str(midi)]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, preexec_fn=limit_size, check=False)
        except subprocess.TimeoutExpired:
            raise AudioError(f"fluidsynth did not finish in {timeout:g} s") from None
        if proc.returncode != 0 or not wav.exists() or wav.stat().st_size <= 44:
            reason = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise AudioError(f"fluidsynth failed: {reason[0]}")
        shutil.move(str(wav), out_path)
    return out_path
