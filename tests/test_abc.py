"""ABC text through midi2abc: headers kept, path and comments gone, clips start at a bar line, budget kept."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from midilm.codecs.abc import AbcError, clean_abc, clip_to_abc, piece_to_abc
from midilm.music.midi_io import read_midi
from midilm.music.piece import Piece
from midilm.music.tempo import TempoMap
from tests.conftest import shared_path

needs_midi2abc = pytest.mark.skipif(shutil.which("midi2abc") is None, reason="abcmidi not installed")


def _scale(bpm: float = 90.0) -> Piece:
    pitches = np.array([60, 62, 64, 65, 67, 69, 71, 72])
    starts = np.arange(8) * 480
    return Piece(480, starts, starts + 480, pitches, np.full(8, 80), np.zeros(8, int), np.zeros(8, int),
                 tempo_map=TempoMap.constant(bpm))


@needs_midi2abc
def test_scale_reads_back_as_abc_notes():
    text = piece_to_abc(_scale(90.0))
    assert "Q:1/4=90" in text and "K:" in text
    assert "T:" not in text
    # the eight notes of the C major scale, in ABC's octave spelling
    music = text.split("K:", 1)[1]
    for note in ("C", "D", "E", "F", "G", "A", "B", "c"):
        assert note in music


@needs_midi2abc
def test_clip_starts_at_a_bar_line_and_stays_in_budget():
    piece = read_midi(shared_path("pop909", "POP909", "472", "472.mid"))
    text = clip_to_abc(piece, 40.0, 60.0, max_chars=800)
    assert len(text) <= 800
    assert text.rstrip().endswith("|")
    body = text.split("K:", 1)[1]
    # a clip from 40 s must not open with 40 s of rests
    assert not body.split("\n", 2)[1].startswith("z4| z4| z4|")


def test_clean_abc_keeps_programs_and_drops_comments():
    raw = ("X: 1\nT: from /secret/path.mid\nM: 4/4\nL: 1/8\n% a comment\nK:G % 1 sharp\n"
           "V:1\n%%MIDI program 40\nab| \\\ncd|\n")
    text = clean_abc(raw, None)
    assert "secret" not in text and "comment" not in text
    assert "%%MIDI program 40" in text
    assert text.splitlines()[-1] == "V:1 %%MIDI program 40 ab| cd|"


def test_missing_midi2abc_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(AbcError, match="abcmidi"):
        piece_to_abc(_scale())
