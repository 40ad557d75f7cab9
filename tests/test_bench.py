"""`midilm bench --quick`: every section runs next to its baseline and lands in one table, JSON and Markdown."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import SHARED_DATA, shared_path

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("mido")


def test_bench_quick(tmp_path):
    shared_path("pop909", "POP909")
    out = tmp_path / "bench"
    r = subprocess.run([sys.executable, "-m", "midilm.cli", "bench", "--quick", "--out", str(out), "--data",
                        str(SHARED_DATA)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((out / "bench.json").read_text())
    sections = [row["section"] for row in result["rows"]]
    assert {"codec", "analysis", "training", "generation"} <= set(sections)
    for row in result["rows"]:
        assert row["ours"] and row["baseline"]  # every figure stands next to its baseline
    train = next(row for row in result["rows"] if row["section"] == "training")["values"]
    assert train["block_tokens_per_s"] > 0 and train["full_tokens_per_s"] > 0
    gen = next(row for row in result["rows"] if row["section"] == "generation" and row["values"])["values"]
    assert gen["ours_tokens"] == gen["baseline_tokens"] == 48 and gen["real_time_factor"] > 0
    table = r.stdout
    assert table.startswith("| section | benchmark | ours | baseline | ratio |")
    assert table.count("\n| ") >= 6 and (out / "bench.md").read_text().count("| codec |") == 2


def test_bench_refuses_unknown_sections(tmp_path, capsys):
    from midilm.cli import main

    assert main(["bench", "--quick", "--only", "codec,nope", "--out", str(tmp_path / "b")]) == 1
    assert "unknown section(s) for --only: nope" in capsys.readouterr().err and not (tmp_path / "b").exists()
