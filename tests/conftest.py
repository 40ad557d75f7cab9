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
