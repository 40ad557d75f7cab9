"""The command line as users run it: real processes, real files, exact output forms."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from midilm.codecs.amt.encode import encode_midi
from tests.conftest import shared_path


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "midilm.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_tokenize_json_one_object_per_file_and_continues_after_errors():
    good = shared_path("fixtures", "MIDIs_one_track", "POP909_008.mid")
    bad = shared_path("fixtures", "MIDIs_corrupted", "ValueError_Control168.mid")
    empty = shared_path("fixtures", "MIDIs_one_track", "empty.mid")
    r = run("tokenize", str(bad), str(good), str(empty), "--json")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["path"] for x in lines] == [str(bad), str(good), str(empty)]
    assert "error" in lines[0] and "error" in lines[2]
    assert lines[1]["tokens"] == encode_midi(good)
    assert r.returncode == 1 and "Traceback" not in r.stderr


def test_detokenize_writes_a_playable_file_for_garbage(tmp_path):
    tokens = tmp_path / "t.json"
    tokens.write_text(json.dumps([55026, 0, 10050, 11060, 7, 10000, 99999, -3, "x", 1.5, 100, 10050]))
    out = tmp_path / "out.mid"
    r = run("detokenize", str(tokens), "-o", str(out), "--bpm", "96", "--meter", "3/4")
    assert r.returncode == 0, r.stderr
    assert "dropped" in r.stderr and out.exists()
    info = json.loads(run("info", str(out), "--json").stdout)
    assert info["notes"] == 1 and info["bpm"] == 96 and info["time_signature"] == "3/4"


def test_detokenize_of_nothing_writes_an_empty_but_valid_file(tmp_path):
    (tmp_path / "t.json").write_text("[]")
    r = run("detokenize", str(tmp_path / "t.json"), "-o", str(tmp_path / "o.mid"))
    assert r.returncode == 0 and (tmp_path / "o.mid").stat().st_size > 0


@pytest.mark.parametrize("content,args", [
    ("{not json", []),
    ('{"a": 1}', []),
    ("[1, 2]", ["--bpm", "0"]),
    ("[1, 2]", ["--bpm", "nan"]),
    ("[1, 2]", ["--meter", "3/5"]),
])
def test_bad_input_is_one_line_and_non_zero(tmp_path, content, args):
    (tmp_path / "t.json").write_text(content)
    r = run("detokenize", str(tmp_path / "t.json"), "-o", str(tmp_path / "o.mid"), *args)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "o.mid").exists()


def test_info_summary_and_errors(tmp_path):
    r = run("example", "-o", str(tmp_path / "ex.mid"))
    assert r.returncode == 0
    r = run("info", str(tmp_path / "ex.mid"))
    assert r.returncode == 0
    for word in ("length", "100 bpm", "4/4", "Acoustic Grand Piano", "Drums", "208"):
        assert word in r.stdout
    bad = shared_path("fixtures", "MIDIs_corrupted", "ValueError_Control168.mid")
    r = run("info", str(bad))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "ValueError_Control168.mid" in r.stderr


def test_tokenize_lines_writes_training_lines(tmp_path):
    files = sorted(shared_path("nottingham", "MIDI").glob("*.mid"))[:20]
    out = tmp_path / "lines.txt"
    r = run("tokenize", *map(str, files), "--lines", str(out))
    assert r.returncode == 0, r.stderr
    lines = out.read_text().splitlines()
    assert lines and all(len(x.split()) == 1024 for x in lines)
