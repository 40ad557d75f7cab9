"""The request queue in front of a model: batching of compatible jobs, back-pressure, deadlines; and the
server's 429 / 504 answers with the real shipped model behind a tiny queue and a short timeout."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")

from midilm.serve.worker import Busy, TimedOut, Worker  # noqa: E402


def test_compatible_jobs_share_a_batch_and_the_rest_keep_their_turn():
    calls: list[tuple[str, list]] = []
    gate = threading.Event()

    def one(job):
        if job.payload == "first":
            gate.wait(5)  # hold the model thread so the others queue up behind it
        calls.append(("one", [job.payload]))
        return job.payload * 2

    def batch(jobs):
        calls.append(("batch", [j.payload for j in jobs]))
        return [j.payload * 2 for j in jobs]

    async def main():
        w = Worker("t", one, batch, queue_size=16, max_batch=4)
        w.start()
        first = asyncio.create_task(w.submit("first", 10))
        await asyncio.sleep(0.05)
        keyed = [asyncio.create_task(w.submit(f"k{i}", 10, batch_key="window")) for i in range(6)]
        other = asyncio.create_task(w.submit("solo", 10))
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(first, *keyed, other)
        stats = w.stats()
        await w.stop()
        return results, stats

    results, stats = asyncio.run(main())
    assert results == ["firstfirst"] + [f"k{i}k{i}" for i in range(6)] + ["solosolo"]
    batches = [payloads for kind, payloads in calls if kind == "batch"]
    assert batches[0] == ["k0", "k1", "k2", "k3"]  # up to max_batch, in arrival order
    assert ("one", ["solo"]) in calls and all("solo" not in b for b in batches)
    assert sorted(p for b in batches for p in b) == [f"k{i}" for i in range(6)]
    assert stats["largest_batch"] == 4 and stats["waiting"] == 0 and stats["done"] == 8


def test_full_queue_is_busy_and_a_late_job_times_out_and_is_skipped():
    ran: list[str] = []

    def one(job):
        ran.append(job.payload)
        time.sleep(0.4)
        return job.payload

    async def main():
        w = Worker("t", one, queue_size=1)
        w.start()
        running = asyncio.create_task(w.submit("running", 5))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(w.submit("waiting", 0.2))
        await asyncio.sleep(0.01)
        with pytest.raises(Busy, match="busy"):
            await w.submit("refused", 5)
        with pytest.raises(TimedOut, match="0.2 s"):
            await waiting
        assert await running == "running"
        await asyncio.sleep(0.1)
        await w.stop()

    asyncio.run(main())
    assert ran == ["running"]  # the timed-out job never reached the model


def test_an_error_reaches_only_its_own_request():
    def one(job):
        if job.payload == "bad":
            raise ValueError("bad input")
        return "ok"

    async def main():
        w = Worker("t", one, queue_size=4)
        w.start()
        results = await asyncio.gather(w.submit("bad", 5), w.submit("good", 5), return_exceptions=True)
        await w.stop()
        return results

    bad, good = asyncio.run(main())
    assert isinstance(bad, ValueError) and good == "ok"


def test_server_answers_429_when_full_and_504_past_the_timeout():
    """The real model behind a one-slot queue and a 1 s timeout: long generations time out (504, and the
    model stops spending steps on them), requests beyond the queue are refused at once (429)."""
    from fastapi.testclient import TestClient

    from midilm.generate.cli import default_model_path
    from midilm.serve.app import Models, create_app
    from midilm.serve.schemas import Limits

    if not default_model_path().is_dir():
        pytest.skip("the shipped text-to-MIDI model is not in this install")
    from midilm.models.midi_llm import load_text_to_midi

    model = load_text_to_midi(default_model_path())
    app = create_app(Models(t2m=model), Limits(queue_size=1, timeout=1.0))
    body = {"prompt": "a long symphony", "max_tokens": 4000, "seconds": 90, "seed": 1}
    with TestClient(app) as client:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            futures = []
            for _ in range(4):
                futures.append(pool.submit(client.post, "/v1/generate", json=body))
                time.sleep(0.1)
            responses = [f.result() for f in futures]
        elapsed = time.perf_counter() - t0
        codes = sorted(r.status_code for r in responses)
        assert codes == [429, 429, 504, 504], [r.text for r in responses]
        for r in responses:
            assert r.json()["detail"] and r.headers["content-type"] == "application/json"
        assert elapsed < 10
        # the model thread lets go of the timed-out batch at its next step, without finishing its 4000 tokens
        deadline = time.perf_counter() + 5
        while client.get("/healthz").json()["queues"]["generate"]["running"] and time.perf_counter() < deadline:
            time.sleep(0.05)
        assert client.get("/healthz").json()["queues"]["generate"]["running"] == 0
        assert time.perf_counter() - t0 < 8
