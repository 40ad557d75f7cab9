"""`midilm analyze`, `midilm annotate accuracy` and `midilm dataset build` as users run them."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.conftest import shared_path

KEY = re.compile(r"^[A-G](#|b)? (major|minor)$")


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "midilm.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_analyze_json_fields_and_errors():
    tune = shared_path("nottingham", "MIDI", "jigs112.mid")
    song = shared_path("fixtures", "MIDIs_one_track", "POP909_008.mid")
    bad = shared_path("fixtures", "MIDIs_corrupted", "ValueError_Control168.mid")
    r = run("analyze", str(tune), str(bad), str(song), "--json")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["path"] for x in rows] == [str(tune), str(bad), str(song)]
    assert "error" in rows[1] and r.returncode == 1
    for row in (rows[0], rows[2]):
        assert KEY.match(row["key"]), row["key"]
        assert isinstance(row["bpm"], (int, float)) and 20 <= row["bpm"] <= 400
        assert re.match(r"^\d+/\d+$", row["time_signature"])
        assert row["instruments"] and isinstance(row["instruments"], list)
        assert row["chords"] and all(":" in c["label"] or c["label"] == "N" for c in row["chords"])
    assert rows[0]["time_signature"] == "6/8"  # a jig


def test_analyze_readable_report():
    r = run("analyze", str(shared_path("fixtures", "MIDIs_one_track", "POP909_008.mid")))
    assert r.returncode == 0
    for word in ("key", "tempo", "meter", "chords", "instruments"):
        assert word in r.stdout


def test_dataset_build_and_load(tmp_path):
    datasets = __import__("pytest").importorskip("datasets")
    folder = tmp_path / "midi"
    folder.mkdir()
    for name in ("jigs112.mid", "reelsd-g23.mid", "waltzes1.mid"):
        (folder / name).write_bytes(shared_path("nottingham", "MIDI", name).read_bytes())
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01")
    out = tmp_path / "ds"
    r = run("dataset", "build", str(folder), "-o", str(out), "--workers", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pieces"] == 3 and summary["failures"] >= 1
    files = [str(p) for p in out.glob("*.parquet")]
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert len(ds) >= 3 and "captions" in ds.column_names
