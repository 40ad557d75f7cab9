"""Token-for-token compatibility with the reference AMT implementation (golden outputs in ../shared)."""

from __future__ import annotations

import json

import pytest

from midilm.codecs.amt.decode import decode_tokens
from midilm.codecs.amt.encode import encode_midi
from midilm.codecs.amt.lines import training_lines
from tests.conftest import shared_path


def _golden(kind: str) -> list:
    return sorted(shared_path("golden", "amt", kind).glob("*.json"))


def test_encoding_equals_reference_on_every_golden_file():
    data = shared_path()
    files = _golden("events")
    assert len(files) >= 80
    mismatches = []
    for f in files:
        gold = json.loads(f.read_text())
        if encode_midi(data / gold["source"]) != gold["events"]:
            mismatches.append(gold["source"])
    assert not mismatches


def test_files_the_reference_cannot_read_give_clear_errors():
    data = shared_path()
    index = json.loads(shared_path("golden", "amt", "index.json").read_text())
    failing = [x for x in index if "reference_error" in x]
    assert failing
    from midilm.errors import MidiReadError

    for item in failing:
        with pytest.raises(MidiReadError, match=item["source"].split("/")[-1]):
            encode_midi(data / item["source"])


@pytest.mark.parametrize("name", ["pop909", "nottingham"])
def test_training_lines_equal_reference(name):
    data = shared_path()
    folder = shared_path("golden", "amt", "lines")
    sources = json.loads((folder / f"{name}.sources.json").read_text())["sources"]
    gold = [[int(t) for t in line.split()] for line in (folder / f"{name}.txt").read_text().splitlines()]
    ours = list(training_lines(encode_midi(data / s) for s in sources))
    assert len(ours) == len(gold)
    assert all(len(line) == 1024 for line in ours)
    assert ours == gold


def test_decoding_gives_reference_notes():
    files = _golden("decoded")
    assert len(files) >= 80
    events_dir = shared_path("golden", "amt", "events")
    bad = []
    for f in files:
        gold = json.loads(f.read_text())
        events = json.loads((events_dir / f.name).read_text())["events"]
        # the reference's grid: 120 bpm at 50 ticks per beat, so one tick is one 10 ms AMT tick
        piece, _ = decode_tokens(events, bpm=120, ticks_per_beat=50, snap=False)
        ours = sorted(zip(piece.start_tick.tolist(), piece.end_tick.tolist(), piece.program.tolist(),
                          piece.pitch.tolist(), piece.velocity.tolist()))
        ref = sorted((n[0], n[1], 128 if n[2] == 9 else n[3], n[4], n[5]) for n in gold["notes"])
        if ours != ref:
            bad.append(f.name)
    assert not bad


def test_decoder_handles_what_the_reference_crashes_on():
    index = json.loads(shared_path("golden", "amt", "index.json").read_text())
    crashing = [x for x in index if "decode_error" in x]
    assert crashing
    events_dir = shared_path("golden", "amt", "events")
    for item in crashing:
        events = json.loads((events_dir / f"{item['name']}.json").read_text())["events"]
        piece, report = decode_tokens(events)
        assert len(piece) == item["n_events"] and report.dropped == 0
