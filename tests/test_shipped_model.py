"""The text-to-MIDI model shipped inside the package: small, offline, and it writes valid music."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from midilm.generate.cli import default_model_path

pytest.importorskip("torch")
pytest.importorskip("transformers")
MODEL = default_model_path()
pytestmark = pytest.mark.skipif(not MODEL.is_dir(), reason="no default model shipped in this checkout")


def test_size_and_files():
    files = {p.name for p in MODEL.iterdir()}
    assert {"config.json", "model.safetensors", "midilm.json", "README.md"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)  # safetensors only
    assert sum(p.stat().st_size for p in MODEL.iterdir()) <= 40 * 2**20


def test_cli_main_job_writes_a_valid_file(tmp_path):
    out = tmp_path / "song.mid"
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "midilm.cli", "generate",
                        "A calm piano piece in C major at 80 bpm.", "-o", str(out), "--seed", "1",
                        "--max-tokens", "600"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    settings = json.loads(out.with_suffix(".json").read_text())
    assert settings["decode"]["dropped"] == 0 and settings["notes"] > 20
    assert settings["instruments"] == [0] and settings["bpm"] == 80.0
    info = json.loads(subprocess.run([sys.executable, "-m", "midilm.cli", "info", str(out), "--json"],
                                     capture_output=True, text=True, timeout=60).stdout)
    assert info["bpm"] == 80.0 and [i["program"] for i in info["instruments"]] == [0]
