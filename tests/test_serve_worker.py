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


def test_a_batch_gives_each_request_what_it_gets_alone(model):
    from midilm.generate.pipeline import GenerateOptions
    from midilm.serve.batch import BatchRequest, batchable, generate_batch

    reqs = [BatchRequest("a calm piano piece in C major", GenerateOptions(seed=1, max_tokens=45, seconds=20)),
            BatchRequest("an upbeat rock song with drums, electric guitar and bass at 140 bpm",
                         GenerateOptions(seed=7, max_tokens=60, seconds=10, n=2, temperature=0.8)),
            BatchRequest("jazz for violin", GenerateOptions(seed=3, max_tokens=30, seconds=8, top_p=0.9,
                                                            instruments=["violin", "cello"]))]
    assert all(batchable(model, r.options) for r in reqs)
    assert batchable(model, GenerateOptions(seconds=None)) and batchable(model, GenerateOptions(seconds=200))
    together = generate_batch(model, reqs)
    for req, gens in zip(reqs, together):
        alone = generate_batch(model, [req])[0]
        # equal up to float rounding, on any machine alike: batched logits differ from alone by <= 4e-6 (measured
        # for issue 16), so a seeded draw flips with odds <= ~1e-5 a token (<= ~2e-3 for these 195 tokens)
        assert [g.tokens for g in gens] == [g.tokens for g in alone]
        assert len(gens) == req.options.n
        for g in gens:
            assert 0 < len(g.tokens) <= req.options.max_tokens and len(g.tokens) % 3 == 0
            assert g.report.dropped == 0 and g.piece.duration <= req.options.seconds + 10
    assert set(together[2][0].piece.program.tolist()) <= {40, 42}  # the allow-list holds
    assert together[1][0].tokens != together[1][1].tokens
    assert together[1][0].settings["bpm"] == 140 and together[1][0].settings["bpm_source"] == "prompt"
    # a request whose caller is gone stops at once; the others in its batch go on
    stopped = BatchRequest("jazz", GenerateOptions(seed=2, max_tokens=300, seconds=30), stop=lambda: True)
    rest = generate_batch(model, [stopped, reqs[0]])
    assert rest[0][0].tokens == [] and rest[0][0].settings["stop_reason"] == "cancelled"
    assert rest[1][0].tokens == together[0][0].tokens


def test_server_answers_429_when_full_and_504_past_the_timeout(model):
    """The real model behind a one-slot queue and a 1 s timeout: long generations time out (504, and the
    model stops spending steps on them), requests beyond the queue are refused at once (429)."""
    from fastapi.testclient import TestClient

    from midilm.serve.app import Models, create_app
    from midilm.serve.schemas import Limits

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
        assert elapsed < 60  # a hang guard, not a speed test (issue 16): the 504s above show the 1 s timeout fired
        # the model thread lets go of the timed-out batch at its next step, without finishing its 4000 tokens
        deadline = time.perf_counter() + 5
        while client.get("/healthz").json()["queues"]["generate"]["running"] and time.perf_counter() < deadline:
            time.sleep(0.05)
        # the check is that the model thread is idle within the 5 s deadline, not a wall-clock bound (issue 16)
        assert client.get("/healthz").json()["queues"]["generate"]["running"] == 0
