"""`midilm serve` against the real shipped models: API behaviour, limits and errors, batching under a
bounded load, and schemathesis fuzzing of the OpenAPI spec (no 5xx)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from midilm.generate.cli import default_model_path  # noqa: E402
from midilm.music.examples import example_piece  # noqa: E402
from midilm.music.midi_io import midi_bytes, read_midi  # noqa: E402
from tests.conftest import shared_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MAX_TOKENS = 48  # the test server's limit keeps every fuzzed generation short
MAX_SAMPLES = 2
SERVER_ARGS = ("--max-tokens", str(MAX_TOKENS), "--max-samples", str(MAX_SAMPLES), "--timeout", "60",
               "--queue-size", "64", "--device", "cpu")
# the shipped understanding model is used; this names another one (a candidate before it ships)
if os.environ.get("MIDILM_TEST_UNDERSTANDING_MODEL"):
    SERVER_ARGS += ("--understanding-model", os.environ["MIDILM_TEST_UNDERSTANDING_MODEL"])


def start_server(tmp: Path, *args: str, timeout: float = 90.0) -> tuple[subprocess.Popen, str]:
    """Run `midilm serve --port 0` and return the process and its base URL once /healthz answers."""
    log = open(tmp / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "midilm.cli", "serve", "--port", "0", *args],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"midilm serve exited with {proc.returncode}: {log.read()}")
        log.seek(0)
        m = re.search(r"studio at (http://\S+?)/ ", log.read())
        if m:
            url = m.group(1)
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"midilm serve did not come up in {timeout:g} s (url {url})")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def server(request):
    if not default_model_path().is_dir():
        pytest.skip("the shipped text-to-MIDI model is not in this install")
    return request.getfixturevalue("serve_url")  # started once per session (conftest.py)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def understanding(client) -> bool:
    models = client.get("/v1/models").json()["models"]
    return next(m for m in models if m["task"] == "understanding")["available"]


def example_midi() -> bytes:
    return midi_bytes(example_piece())


def gen(client, **body):
    body = {"prompt": "a calm piano piece", "max_tokens": 30, "seconds": 10, **body}
    return client.post("/v1/generate", json=body)


# --- service ---


def test_health_models_and_limits(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["text_to_midi"] is True
    models = client.get("/v1/models").json()
    t2m = next(m for m in models["models"] if m["task"] == "text-to-midi")
    assert t2m["available"] and t2m["id"] == "midilm-t2m-tiny" and t2m["backend"] == "transformers"
    assert models["limits"]["max_tokens"] == MAX_TOKENS and models["limits"]["max_samples"] == MAX_SAMPLES
    spec = client.get("/openapi.json").json()
    body = spec["components"]["schemas"]["GenerateRequest"]["properties"]
    assert body["max_tokens"]["maximum"] == MAX_TOKENS and body["prompt"]["maxLength"] == 2000
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "midilm" in page.text and "/static/studio.js" in page.text
    assert client.get("/static/studio.js").status_code == 200


def test_models_say_where_they_run(client):
    """`--device cpu` (the test server's) reaches every model, and the analysis answerer is always listed."""
    models = client.get("/v1/models").json()["models"]
    assert next(m for m in models if m["task"] == "text-to-midi")["device"] == "cpu"
    understanding = [m for m in models if m["task"] == "understanding"]
    assert understanding[-1] == {"id": "analysis", "task": "understanding", "available": True, "device": "cpu"}
    if understanding[0]["available"]:
        assert understanding[0]["device"] == "cpu"


# --- text to MIDI ---


def test_generate_returns_playable_midi_with_its_settings(client):
    r = gen(client, seed=11, instruments=["violin"], bpm=90, time_signature="3/4", n=2)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["model"] == "midilm-t2m-tiny" and len(data["samples"]) == 2
    for k, s in enumerate(data["samples"]):
        piece = read_midi(base64.b64decode(s["midi_base64"]))
        assert len(piece) == len(s["notes"]) == s["settings"]["notes"] > 0
        assert set(piece.program.tolist()) == {40}  # the allow-list holds: violin only
        assert piece.bpm == pytest.approx(90, abs=0.01) and str(piece.time_signature) == "3/4"
        assert s["settings"]["seed"] == 11 and s["settings"]["sample"] == k and s["settings"]["bpm_source"] == "option"
        assert len(s["tokens"]) % 3 == 0 and 0 < len(s["tokens"]) <= 30
        starts = [n[0] for n in s["notes"]]
        assert starts == sorted(starts) and all(n[1] >= n[0] for n in s["notes"])
    assert data["samples"][0]["tokens"] != data["samples"][1]["tokens"]


def test_same_seed_same_music_and_batching_keeps_it(client):
    """A request batched with others samples exactly what it samples alone."""
    alone = gen(client, seed=5, max_tokens=45).json()["samples"][0]["tokens"]
    assert gen(client, seed=5, max_tokens=45).json()["samples"][0]["tokens"] == alone

    async def crowd():
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=60) as ac:
            bodies = [{"prompt": f"a lively jig number {i}", "max_tokens": 45, "seconds": 10, "seed": 100 + i}
                      for i in range(6)]
            bodies.insert(3, {"prompt": "a calm piano piece", "max_tokens": 45, "seconds": 10, "seed": 5})
            return await asyncio.gather(*(ac.post("/v1/generate", json=b) for b in bodies))

    responses = asyncio.run(crowd())
    assert all(r.status_code == 200 for r in responses)
    # equal up to float rounding, on any machine alike: batched logits differ from alone by <= 4e-6 (measured for
    # issue 16), so a seeded draw flips with odds <= ~1e-5 a token (<= ~5e-4 for these 45 tokens)
    assert responses[3].json()["samples"][0]["tokens"] == alone
    # scheduling, tolerant by design: 7 requests arrive within milliseconds; one 45-token generation takes 0.6 s here
    assert max(r.json()["batched_with"] for r in responses) > 1


def test_generate_without_seconds_uses_the_token_budget(client):
    r = client.post("/v1/generate", json={"prompt": "jazz trio with piano, bass and drums", "max_tokens": 36,
                                          "seed": 3})
    assert r.status_code == 200, r.text
    s = r.json()["samples"][0]
    assert r.json()["batched_with"] == 1 and s["settings"]["stop_reason"] in ("max tokens", "window full")
    assert len(s["tokens"]) <= 36 and len(read_midi(base64.b64decode(s["midi_base64"]))) == len(s["notes"])


def test_continue_keeps_the_whole_piece_and_samples_what_the_cli_samples(client, tmp_path):
    """/v1/continue keeps every note of the upload at its time, on its tempo and meter, writes `seconds` of new
    music from its last onset on, and samples the tokens `midilm generate --continue` samples (issue 13)."""
    given = example_piece()
    upload = tmp_path / "in.mid"
    upload.write_bytes(midi_bytes(given))
    given = read_midi(upload)
    seconds = 1.5
    r = client.post("/v1/continue", files={"file": ("in.mid", upload.read_bytes(), "audio/midi")},
                    data={"prompt": "pop song", "max_tokens": str(MAX_TOKENS), "seed": "4", "seconds": str(seconds)})
    assert r.status_code == 200, r.text
    s = r.json()["samples"][0]
    out = read_midi(base64.b64decode(s["midi_base64"]))
    assert out.bpm == pytest.approx(given.bpm, abs=0.01) and str(out.time_signature) == str(given.time_signature)
    old = sorted(zip(np.round(given.start, 2), given.pitch, given.program))
    notes = sorted(zip(np.round(out.start, 2), out.pitch, out.program))
    for note in old:  # every given note is there, at its time (2 decimals: the MIDI tick grid)
        assert note in notes, note
        notes.remove(note)
    last = float(given.start.max())
    assert notes and all(last - 0.01 <= t <= last + seconds + 0.01 for t, _, _ in notes), (last, notes)
    assert 0 < len(s["tokens"]) <= MAX_TOKENS
    cli = subprocess.run([sys.executable, "-m", "midilm.cli", "generate", "pop song", "--continue", str(upload),
                          "--seconds", str(seconds), "--max-tokens", str(MAX_TOKENS), "--seed", "4", "-o",
                          str(tmp_path / "cli.mid")], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert json.loads((tmp_path / "cli.tokens.json").read_text()) == s["tokens"]


# --- understanding, analysis, audio ---


def test_describe_and_ask(client, understanding):
    files = {"file": ("ex.mid", example_midi(), "audio/midi")}
    r = client.post("/v1/describe", files=files)
    if not understanding:
        assert r.status_code == 503 and r.json()["detail"].startswith("understanding model not available")
        assert client.post("/v1/ask", files=files, data={"question": "What key?"}).status_code == 503
        pytest.skip("the shipped understanding model is not in this install (503 checked)")
    assert r.status_code == 200, r.text
    caption = r.json()["caption"]
    assert isinstance(caption, str) and len(caption.split()) >= 3
    history = '[{"question": "What instruments play?", "answer": "Piano, bass and drums."}]'
    r = client.post("/v1/ask", files=files, data={"question": "What key is this in?", "history": history})
    assert r.status_code == 200, r.text
    assert r.json()["answer"].strip() and r.json()["question"] == "What key is this in?"


def test_describe_and_ask_from_the_analysis(client):
    """`model=analysis` answers from the analysis of the notes, with or without an understanding model."""
    from midilm.annotate.analyze import analyze_piece
    from midilm.annotate.questions import answer_is_correct

    path = shared_path("pop909", "POP909", "020", "020.mid")
    files = {"file": (path.name, path.read_bytes(), "audio/midi")}
    analysis = analyze_piece(read_midi(path))
    r = client.post("/v1/describe", files=files, data={"model": "analysis"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "analysis" and len(body["caption"].split()) >= 25
    for qtype in ("key", "tempo", "meter", "instruments", "texture", "dynamics"):
        assert answer_is_correct(qtype, body["caption"], analysis), (qtype, body["caption"])
    r = client.post("/v1/ask", files=files, data={"model": "analysis", "question": "What key is this piece in?"})
    assert r.status_code == 200 and r.json()["model"] == "analysis", r.text
    assert answer_is_correct("key", r.json()["answer"], analysis), r.json()["answer"]
    r = client.post("/v1/ask", files=files, data={"model": "gpt-5", "question": "What key is this piece in?"})
    assert r.status_code == 422 and "model" in r.json()["detail"]


def test_analyze_matches_the_library(client):
    from midilm.annotate.analyze import analyze_piece

    data = example_midi()
    r = client.post("/v1/analyze", files={"file": ("ex.mid", data, "audio/midi")})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = analyze_piece(read_midi(data))
    assert body["analysis"]["key"] == expected["key"] == "C major"
    assert body["analysis"]["bpm"] == expected["bpm"] and len(body["notes"]) == len(read_midi(data))


def test_analyze_a_real_file(client):
    path = shared_path("pop909", "POP909", "472", "472.mid")
    r = client.post("/v1/analyze", files={"file": (path.name, path.read_bytes(), "audio/midi")})
    assert r.status_code == 200, r.text
    assert len(r.json()["notes"]) == len(read_midi(path))


def test_render_gives_a_wav_of_the_piece(client):
    piece = example_piece()
    r = client.post("/v1/render", files={"file": ("ex.mid", midi_bytes(piece), "audio/midi")})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(r.content)) as w:
        seconds = w.getnframes() / w.getframerate()
        assert w.getnchannels() == 2 and piece.duration - 0.1 <= seconds <= piece.duration + 15
        frames = w.readframes(w.getnframes())
    assert any(frames[i] for i in range(0, len(frames), 997))  # not silence


# --- bad input: 4xx with a message, never 5xx ---


@pytest.mark.parametrize("body, field", [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * 2001}, "prompt"),
    ({"prompt": "ok", "max_tokens": -5}, "max_tokens"),
    ({"prompt": "ok", "max_tokens": MAX_TOKENS + 1}, "max_tokens"),
    ({"prompt": "ok", "max_tokens": 10**30}, "max_tokens"),
    ({"prompt": "ok", "n": 0}, "n"),
    ({"prompt": "ok", "n": MAX_SAMPLES + 1}, "n"),
    ({"prompt": "ok", "temperature": 0}, "temperature"),
    ({"prompt": "ok", "temperature": 2.5}, "temperature"),
    ({"prompt": "ok", "top_p": 1.5}, "top_p"),
    ({"prompt": "ok", "bpm": 5}, "bpm"),
    ({"prompt": "ok", "seed": -1}, "seed"),
    ({"prompt": "ok", "seed": 2**32}, "seed"),
    ({"prompt": "ok", "seconds": 0}, "seconds"),
    ({"prompt": "ok", "instruments": ["kazoo orchestra"]}, "instruments"),
    ({"prompt": "ok", "instruments": ["piano"] * 17}, "instruments"),
    ({"prompt": "ok", "time_signature": "7/3"}, "time_signature"),
    ({"prompt": "ok", "surprise": 1}, "surprise"),
    ({"prompt": 12}, "prompt"),
])
def test_bad_generate_bodies_are_422_with_the_field_named(client, body, field):
    r = client.post("/v1/generate", json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]


def test_bad_json_and_wrong_types(client):
    for raw, ctype in [(b"{bad json", "application/json"), (b"[1, 2]", "application/json"),
                       (b'{"prompt": "x", "temperature": NaN}', "application/json"), (b"", "application/json"),
                       (b"prompt=x", "text/plain")]:
        r = client.post("/v1/generate", content=raw, headers={"content-type": ctype})
        assert 400 <= r.status_code < 500, (raw, r.status_code, r.text)
        assert isinstance(r.json()["detail"], str) and r.json()["detail"]


def test_bad_uploads(client):
    cases = [
        ({"file": ("x.mid", b"not a midi file at all", "audio/midi")}, 422, "not a readable MIDI file"),
        ({"file": ("x.mid", b"", "audio/midi")}, 422, "empty"),
        ({"file": ("x.mid", example_midi()[:40], "audio/midi")}, 422, "not a readable MIDI file"),
        ({"file": ("big.mid", b"MThd" + b"\0" * (3 << 20), "audio/midi")}, 413, "limit"),
    ]
    for endpoint in ("/v1/describe", "/v1/analyze", "/v1/render", "/v1/continue"):
        for files, status, text in cases:
            r = client.post(endpoint, files=files)
            assert r.status_code == status and text in r.json()["detail"], (endpoint, r.status_code, r.text)
    # a body without a declared length is counted as it arrives
    head = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.mid"\r\n\r\nMThd'
    chunks = iter([head] + [b"\0" * (1 << 20)] * 3 + [b"\r\n--xyz--\r\n"])
    r = client.post("/v1/describe", content=chunks, headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert client.post("/v1/analyze").status_code == 422  # no file at all
    r = client.post("/v1/ask", files={"file": ("x.mid", example_midi(), "audio/midi")}, data={"question": ""})
    assert r.status_code == 422
    r = client.post("/v1/ask", files={"file": ("x.mid", example_midi(), "audio/midi")},
                    data={"question": "key?", "history": "{not json"})
    assert r.status_code == 422 and "history" in r.json()["detail"]
    r = client.post("/v1/continue", files={"file": ("x.mid", example_midi(), "audio/midi")},
                    data={"max_tokens": "100000"})
    assert r.status_code == 422 and "max_tokens" in r.json()["detail"]
    assert client.get("/v1/nothing-here").json() == {"detail": "Not Found"}


# --- load: 16+ concurrent generations, none fails, none hangs ---


def test_load_24_concurrent_generations(client):
    async def burst():
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=60) as ac:
            t0 = time.perf_counter()
            tasks = [ac.post("/v1/generate", json={"prompt": f"song {i} for guitar and drums", "max_tokens": 30,
                                                   "seconds": 8, "seed": i, "n": 1 + i % 2})
                     for i in range(24)]
            responses = await asyncio.wait_for(asyncio.gather(*tasks), 90)
            return responses, time.perf_counter() - t0

    responses, _ = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 24
    assert all(len(r.json()["samples"]) == 1 + i % 2 for i, r in enumerate(responses))
    # no wall-clock bound here (issue 16: timing depends on the machine); wait_for's 90 s above catches a hang
    stats = client.get("/healthz").json()["queues"]["generate"]
    # scheduling, tolerant by design: 24 requests arrive within milliseconds while one 30-token generation takes
    # 0.5 s here (a CPU 10 times faster still needs 50 ms), so at least 4 wait together
    assert stats["largest_batch"] >= 4 and stats["waiting"] == 0 and stats["running"] == 0


# --- fuzzing the OpenAPI spec ---


def test_schemathesis_finds_no_server_errors(server):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    failures = []
    counts: dict[str, int] = {}

    @settings(max_examples=10, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def run(case):
        response = case.call_and_validate(base_url=server, checks=[not_a_server_error], timeout=60)
        counts[str(response.status_code)] = counts.get(str(response.status_code), 0) + 1

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            try:
                given(case=operation.as_strategy(generation_mode=mode))(run)()
            except Unsatisfiable:  # an operation without inputs has no invalid input to send
                continue
            except Exception as e:  # collect every operation's failure, then report them together
                failures.append(f"{operation.label} ({mode.value}): {str(e)[:600]}")
    assert not failures, "\n".join(failures)
    # both kinds of input reached the server: accepted requests and rejected ones
    assert counts.get("200", 0) >= 5 and counts.get("422", 0) >= 20, counts


# --- the command line ---


def _free_port_in_use():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def test_cli_errors_are_one_line():
    taken = _free_port_in_use()
    try:
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "midilm.cli", "serve", "--port", str(port)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and r.stderr.startswith("midilm: error: cannot listen on 127.0.0.1:")
        assert len(r.stderr.strip().splitlines()) == 1
    finally:
        taken.close()
    r = subprocess.run([sys.executable, "-m", "midilm.cli", "serve", "--port", "0", "--model", "/nonexistent/model"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "model directory not found: /nonexistent/model" in r.stderr
    r = subprocess.run([sys.executable, "-m", "midilm.cli", "serve", "--port", "70000"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "port must be 0-65535" in r.stderr
    import importlib.util

    import torch

    if not torch.cuda.is_available():  # a device the machine lacks: one line, before anything loads
        for flag in ("--device", "--understanding-device"):
            r = subprocess.run([sys.executable, "-m", "midilm.cli", "serve", "--port", "0", flag, "cuda:0"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 1, r.stderr
            assert r.stderr.startswith(f"midilm: error: {flag} cuda:0: this machine has no cuda device")
            assert len(r.stderr.strip().splitlines()) == 1
    if importlib.util.find_spec("vllm") is None:  # CPU machines: the vLLM backend says what it needs
        r = subprocess.run([sys.executable, "-m", "midilm.cli", "serve", "--port", "0", "--backend", "vllm"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and r.stderr.startswith("midilm: error: the vllm backend needs the vllm package")
        assert len(r.stderr.strip().splitlines()) == 1
