"""The README's first command on the minimal set-up: `./scripts/setup.sh` without options installs only the
package's dependencies and its `generate` extra, so the main job must run with nothing else importable (and
on the default transformers backend, with no warning and no word about llama.cpp); the script's options."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
pytest.importorskip("torch")
pytest.importorskip("transformers")
Requirement = pytest.importorskip("packaging.requirements").Requirement


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_closure(roots: list[str]) -> set[str]:
    """Normalised names of the installed distributions that `pip install` of `roots` pulls in."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if _key(name) in seen:
            continue
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue  # an optional platform dependency that is not installed here
        seen.add(_key(name))
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


@pytest.fixture(scope="module")
def minimal_site(tmp_path_factory) -> Path:
    """A folder of links to exactly what `./scripts/setup.sh` installs: the closure of the core dependencies
    and the `generate` extra, taken from this environment's installed files."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    roots = [Requirement(r).name for r in project["dependencies"] + project["optional-dependencies"]["generate"]]
    site = tmp_path_factory.mktemp("minimal-site")
    for name in requirement_closure(roots):
        dist = md.distribution(name)
        for entry in {f.parts[0] for f in dist.files or [] if f.parts and f.parts[0] not in ("..", "__pycache__")}:
            target = Path(dist.locate_file(entry))
            if target.exists() and not (site / entry).exists():
                (site / entry).symlink_to(target)
    return site


def test_the_main_job_runs_on_the_minimal_install(minimal_site, tmp_path):
    # -S: no site-packages, so only the linked distributions (and midilm's src) can be imported
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(minimal_site), str(REPO / "src")])}
    out = tmp_path / "song.mid"
    job = ["generate", "A calm piano piece in C major at 80 bpm.", "-o", str(out), "--seed", "1", "--png"]
    r = subprocess.run([sys.executable, "-S", "-m", "midilm.cli", *job, "--max-tokens", "60"],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert out.is_file() and out.with_suffix(".png").is_file()
    assert json.loads(out.with_suffix(".json").read_text())["backend"] == "transformers"
    noise = r"llama[._ -]?cpp|gguf|not installed|fall(ing)? back|warning|deprecat"
    assert not re.search(noise, r.stderr, re.I), r.stderr


def test_the_minimal_site_leaves_out_what_only_the_tests_need(minimal_site):
    # the check above means something only if the optional packages are really out of reach
    names = {p.name for p in minimal_site.iterdir()}
    assert {"torch", "transformers", "matplotlib", "numpy"} <= names
    assert not names & {"scipy", "music21", "fastapi", "llama_cpp", "pytest", "accelerate", "peft"}


def test_setup_options():
    script = REPO / "scripts" / "setup.sh"
    r = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "--all" in r.stdout
    r = subprocess.run(["bash", str(script), "--everything"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "unknown option '--everything'" in r.stderr
    readme = (REPO / "README.md").read_text()
    assert "\n./scripts/setup.sh && .venv/bin/midilm generate " in readme  # the main job: the minimal set-up
    assert "\n./scripts/setup.sh --all && .venv/bin/python -m pytest -q\n" in readme  # what .ci/run runs
