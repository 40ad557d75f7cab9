"""Shared fixtures: the read-only data beside the repository, skipped cleanly where absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MIDILM_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; skips the calling test when it is missing."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not available (tests that need ../shared/data skip without it)")
    return p


@pytest.fixture
def shared_data() -> Path:
    return shared_path()


@pytest.fixture(scope="session")
def serve_url(tmp_path_factory):
    """One real `midilm serve` with the shipped models and small limits on a free loopback port, shared by the
    API and studio tests (tests/test_serve.py has the helpers)."""
    from tests.test_serve import SERVER_ARGS, start_server, stop_server

    proc, url = start_server(tmp_path_factory.mktemp("serve"), *SERVER_ARGS)
    yield url
    stop_server(proc)


@pytest.fixture(scope="session")
def _shipped_t2m():
    """The shipped text-to-MIDI model, loaded once for the session; nothing in the tests writes to it."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from midilm.generate.cli import default_model_path
    from midilm.models.midi_llm import load_text_to_midi

    if not default_model_path().is_dir():
        pytest.skip("no default model shipped in this checkout")
    return load_text_to_midi(default_model_path())


@pytest.fixture(scope="module")
def model(_shipped_t2m):
    """The shipped text-to-MIDI model on one torch thread for the module's tests, as `midilm serve` runs it (a
    tiny model gains nothing from two threads, and the cores are shared); the thread count is restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield _shipped_t2m
    torch.set_num_threads(threads)
