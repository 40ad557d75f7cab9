"""The HTTP API and the studio: a FastAPI app over loaded models, each behind its own bounded worker.

Text-to-MIDI requests that fit one window are batched together (`midilm.serve.batch`); longer ones
and continuations run through `midilm.generate.pipeline.generate`. The understanding model (caption,
questions) has its own thread, and analysis and audio rendering a third pool, so a long generation
never blocks a caption. Every error is JSON `{"detail": "..."}`; bad input is a 4xx, never a 5xx.
"""

import base64
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from midilm.errors import MidilmError, MidiReadError
from midilm.serve.schemas import (
    AnalyzeResponse,
    AskResponse,
    DescribeResponse,
    ErrorResponse,
    GenerateResponse,
    Limits,
    parse_instruments,
    parse_meter,
    request_models,
)
from midilm.serve.worker import Busy, TimedOut, Worker

log = logging.getLogger("midilm.serve")
STATIC = Path(__file__).resolve().parent / "static"
UNDERSTANDING_MISSING = "understanding model not available"
ERRORS = {code: {"model": ErrorResponse} for code in (413, 422, 429, 503, 504)}
CONTEXT_SECONDS = 60.0  # a continuation sees the last minute of the upload (one window holds 100 s)


@dataclass
class Models:
    """What the server loaded at start; `understanding_error` says why there is no understanding model."""

    t2m: Any = None
    t2m_backend: str = "transformers"
    understanding: Any = None
    understanding_path: str | None = None
    understanding_error: str | None = None


@dataclass
class GenJob:
    prompt: str
    options: Any  # GenerateOptions
    context: list[int] = field(default_factory=list)


@dataclass
class AskJob:
    """A caption (no question) or an answer, with the chat's earlier (question, answer) turns."""

    piece: Any
    question: str | None = None
    history: list[tuple[str, str]] = field(default_factory=list)


# --- helpers -------------------------------------------------------------------------


def notes_json(piece, limit: int) -> tuple[list[list[float]], bool]:
    """[start s, end s, pitch, velocity, program] per note, the first `limit` by onset."""
    if not len(piece):
        return [], False
    k = min(len(piece), limit)
    cols = np.stack([np.round(piece.start[:k], 3), np.round(piece.end[:k], 3), piece.pitch[:k],
                     piece.velocity[:k], piece.program[:k]], axis=1)
    return cols.tolist(), len(piece) > limit


def sample_json(gen, limit: int) -> dict:
    from midilm.music.midi_io import midi_bytes

    notes, _ = notes_json(gen.piece, limit)
    return {"midi_base64": base64.b64encode(midi_bytes(gen.piece)).decode("ascii"), "tokens": list(gen.tokens),
            "settings": gen.settings, "notes": notes, "duration": round(gen.piece.duration, 3),
            "instruments": gen.piece.instrument_names()}


def continuation_context(data: bytes) -> list[int]:
    """AMT events of an uploaded piece for the model to continue: its last minute, re-zeroed."""
    from midilm.codecs.amt.encode import encode_midi

    events = encode_midi(data)
    last = max(events[0::3])
    start = max(0, last - int(CONTEXT_SECONDS * 100))
    return [x for i in range(0, len(events), 3) if events[i] >= start
            for x in (events[i] - start, events[i + 1], events[i + 2])]


def _error_text(exc: RequestValidationError) -> tuple[str, list[dict]]:
    errors = []
    for e in exc.errors():
        if e.get("type") == "json_invalid":
            errors.append({"field": "", "message": "the body is not valid JSON", "type": "json_invalid"})
            continue
        loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "form"))
        errors.append({"field": loc, "message": e.get("msg", "invalid"), "type": e.get("type", "")})
    text = "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors)
    return text or "invalid request", errors


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413, whether it declares its length or not."""

    def __init__(self, app, limit: int, files_kib: int):
        self.app = app
        self.limit = limit
        self.files_kib = files_kib

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        message = f"request body over the server's limit ({self.limit // 1024} KiB; files up to {self.files_kib} KiB)"
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            response = JSONResponse({"detail": message}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, message)
            return msg

        return await self.app(scope, counted, send)


# --- the app -------------------------------------------------------------------------------------------


def create_app(models: Models | None = None, limits: Limits | None = None) -> FastAPI:
    """The API and studio over `models` (loaded by the caller, once); limits as given or the defaults."""
    models = models or Models()
    limits = limits or Limits()
    schemas = request_models(limits)
    GenerateRequest = schemas["GenerateRequest"]  # noqa: N806 (a class built for these limits)

    def run_generation_batch(jobs) -> list:
        from midilm.serve.batch import BatchRequest, generate_batch

        reqs = [BatchRequest(j.payload.prompt, j.payload.options, j.stop) for j in jobs]
        out = generate_batch(models.t2m, reqs)
        return [([sample_json(g, limits.max_notes_returned) for g in gens], len(jobs)) for gens in out]

    def run_generation(job) -> tuple[list[dict], int]:
        from midilm.generate.pipeline import generate

        p = job.payload
        gens = generate(models.t2m, p.prompt, p.options, p.context)
        return [sample_json(g, limits.max_notes_returned) for g in gens], 1

    def run_understanding(job) -> str:
        p = job.payload
        if p.question is None:
            return models.understanding.describe(p.piece)
        return models.understanding.ask(p.piece, p.question, history=p.history or None)

    def run_understanding_batch(jobs) -> list[str]:
        # captions batch with captions, first questions with first questions (the model's *_many calls)
        pieces = [j.payload.piece for j in jobs]
        if jobs[0].payload.question is None:
            return models.understanding.describe_many(pieces)
        return models.understanding.ask_many(pieces, [j.payload.question for j in jobs])

    workers = {
        "generate": Worker("generate", run_generation, run_generation_batch, queue_size=limits.queue_size,
                           max_batch=limits.max_batch),
        "understand": Worker("understand", run_understanding, run_understanding_batch, queue_size=limits.queue_size,
                             max_batch=limits.max_batch),
        "tools": Worker("tools", lambda job: job.payload(), queue_size=limits.queue_size, threads=2),
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for w in workers.values():
            w.start()
        yield
        for w in workers.values():
            await w.stop()

    swagger = _swagger_assets()
    app = FastAPI(
        title="midilm", version=_version(), lifespan=lifespan, redoc_url=None,
        docs_url=None if swagger else "/docs",
        description="Text to MIDI, MIDI continuation, captions and questions about MIDI files. "
                    "The studio is at `/`. Every error is JSON `{\"detail\": \"...\"}`.",
    )
    app.state.models = models
    app.state.limits = limits
    app.state.workers = workers
    # multipart framing and the other fields need a little room beside the file itself
    app.add_middleware(BodyLimit, limit=limits.max_upload_bytes + 64 * 1024, files_kib=limits.max_upload_bytes // 1024)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        text, errors = _error_text(exc)
        return JSONResponse({"detail": text, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    async def run(worker: str, payload: Any, batch_key: str | None = None) -> Any:
        try:
            return await workers[worker].submit(payload, limits.timeout, batch_key)
        except Busy as e:
            raise HTTPException(429, str(e), headers={"Retry-After": "2"}) from None
        except TimedOut as e:
            raise HTTPException(504, str(e)) from None
        except (MidilmError, ValueError) as e:
            raise HTTPException(422, str(e)) from None

    async def read_upload(file: UploadFile) -> tuple[bytes, Any]:
        from midilm.music.midi_io import read_midi

        data = await file.read(limits.max_upload_bytes + 1)
        if len(data) > limits.max_upload_bytes:
            raise HTTPException(413, f"file over the {limits.max_upload_bytes // 1024} KiB limit")
        if not data:
            raise HTTPException(422, "the file is empty")
        try:
            piece = read_midi(data)
        except MidiReadError as e:
            raise HTTPException(422, f"not a readable MIDI file: {e.reason}") from None
        return data, piece

    def need_t2m() -> None:
        if models.t2m is None:
            raise HTTPException(503, "text-to-MIDI model not loaded")

    def need_understanding() -> None:
        if models.understanding is None:
            raise HTTPException(503, f"{UNDERSTANDING_MISSING}: {models.understanding_error or 'not loaded'}")

    def options_for(body: Any, seconds: float | None) -> Any:
        from midilm.generate.pipeline import GenerateOptions

        return GenerateOptions(seed=body.seed, max_tokens=body.max_tokens, seconds=seconds, bpm=body.bpm,
                               time_signature=parse_meter(body.time_signature), instruments=body.instruments,
                               n=body.n, temperature=body.temperature, top_p=body.top_p)

    def generate_response(result: tuple[list[dict], int], t0: float) -> dict:
        samples, batched = result
        return {"model": _model_name(models.t2m), "elapsed_seconds": round(time.perf_counter() - t0, 3),
                "batched_with": batched, "samples": samples}

    # --- service ---

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict:
        """Liveness and queue depth."""
        return {"status": "ok", "text_to_midi": models.t2m is not None,
                "understanding": models.understanding is not None,
                "queues": {name: w.stats() for name, w in workers.items()}}

    @app.get("/v1/models", tags=["service"])
    async def list_models() -> dict:
        """The models loaded, and the limits requests must keep to."""
        out = []
        if models.t2m is not None:
            out.append({"id": _model_name(models.t2m), "task": "text-to-midi", "backend": models.t2m_backend,
                        "path": str(getattr(models.t2m, "path", "")), "available": True})
        else:
            out.append({"id": None, "task": "text-to-midi", "available": False, "reason": "not loaded"})
        out.append({"id": Path(models.understanding_path).name if models.understanding_path else None,
                    "task": "understanding", "available": models.understanding is not None,
                    **({"reason": models.understanding_error} if models.understanding is None else {})})
        return {"models": out, "limits": limits.as_dict()}

    @app.get("/v1/instruments", tags=["service"])
    async def instruments() -> dict:
        """Instrument words the `instruments` fields accept (a selection; any General MIDI name works), and the
        General MIDI name of each program number the notes carry (128 = drums)."""
        from midilm.music.gm import program_name

        return {"instruments": list(STUDIO_INSTRUMENTS), "program_names": [program_name(p) for p in range(129)]}

    # --- text to MIDI ---

    @app.post("/v1/generate", tags=["music"], response_model=GenerateResponse, responses=ERRORS)
    async def generate_midi(body: GenerateRequest) -> dict:  # type: ignore[valid-type]
        """Write MIDI from a text prompt: `n` samples, each as base64 MIDI with its tokens, notes and settings."""
        need_t2m()
        from midilm.serve.batch import batchable

        t0 = time.perf_counter()
        options = options_for(body, body.seconds)
        key = "window" if batchable(models.t2m, options) else None
        return generate_response(await run("generate", GenJob(body.prompt, options), key), t0)

    @app.post("/v1/continue", tags=["music"], response_model=GenerateResponse, responses=ERRORS)
    async def continue_midi(
        file: Annotated[UploadFile, File(description="the MIDI file to continue (its last minute is the context)")],
        prompt: Annotated[str, Form(max_length=limits.max_prompt_chars)] = "",
        max_tokens: Annotated[int, Form(ge=3, le=limits.max_tokens)] = limits.default_tokens,
        seed: Annotated[int | None, Form(ge=0, lt=2**32)] = None,
        temperature: Annotated[float, Form(ge=0.01, le=2, allow_inf_nan=False)] = 1.0,
        top_p: Annotated[float, Form(gt=0, le=1, allow_inf_nan=False)] = 0.98,
        bpm: Annotated[float | None, Form(ge=20, le=300, allow_inf_nan=False)] = None,
        instruments: Annotated[str, Form(max_length=600, description="comma-separated, e.g. piano,violin")] = "",
        n: Annotated[int, Form(ge=1, le=limits.max_samples)] = 1,
        seconds: Annotated[float | None, Form(gt=0, le=limits.max_seconds, allow_inf_nan=False,
                                              description="seconds of new music")] = None,
    ) -> dict:
        """Continue an uploaded piece; each sample holds the given last minute followed by the new music."""
        need_t2m()
        from midilm.generate.sampler import music_seconds

        t0 = time.perf_counter()
        data, _ = await read_upload(file)
        words = [w for w in instruments.split(",") if w.strip()]
        if len(words) > limits.max_instruments:
            raise HTTPException(422, f"instruments: at most {limits.max_instruments}")
        if "\x00" in prompt:
            raise HTTPException(422, "prompt contains a NUL character")
        try:
            words = parse_instruments(words)
            context = continuation_context(data)
        except (MidilmError, ValueError) as e:
            raise HTTPException(422, str(e)) from None
        body = _Form(max_tokens=max_tokens, seed=seed, temperature=temperature, top_p=top_p, bpm=bpm,
                     instruments=words, n=n)
        total = None if seconds is None else music_seconds(context) + seconds
        options = options_for(body, total)
        return generate_response(await run("generate", GenJob(prompt, options, context)), t0)

    # --- understanding ---

    @app.post("/v1/describe", tags=["understanding"], response_model=DescribeResponse, responses=ERRORS)
    async def describe(file: Annotated[UploadFile, File(description="a MIDI file")]) -> dict:
        """A caption of an uploaded MIDI file, written by the understanding model."""
        _, piece = await read_upload(file)
        need_understanding()
        t0 = time.perf_counter()
        caption = await run("understand", AskJob(piece), batch_key="describe")
        return {"caption": str(caption), "model": _understanding_name(models),
                "elapsed_seconds": round(time.perf_counter() - t0, 3)}

    @app.post("/v1/ask", tags=["understanding"], response_model=AskResponse, responses=ERRORS)
    async def ask(
        file: Annotated[UploadFile, File(description="a MIDI file")],
        question: Annotated[str, Form(min_length=1, max_length=limits.max_question_chars)],
        history: Annotated[str, Form(max_length=50_000, description=(
            'earlier turns as JSON: [{"question": "...", "answer": "..."}, ...]'))] = "",
    ) -> dict:
        """Answer a question about an uploaded MIDI file (earlier turns of the chat in `history`)."""
        if not question.strip() or "\x00" in question:
            raise HTTPException(422, "question is empty or holds a NUL character")
        turns = _history(history, limits.max_history_turns)
        _, piece = await read_upload(file)
        need_understanding()
        t0 = time.perf_counter()
        answer = await run("understand", AskJob(piece, question, turns), batch_key=None if turns else "ask")
        return {"answer": str(answer), "question": question, "model": _understanding_name(models),
                "elapsed_seconds": round(time.perf_counter() - t0, 3)}

    @app.post("/v1/analyze", tags=["understanding"], response_model=AnalyzeResponse, responses=ERRORS)
    async def analyze(file: Annotated[UploadFile, File(description="a MIDI file")]) -> dict:
        """Measured facts of an uploaded MIDI file (key, tempo, meter, instruments, texture, ...) and its notes."""
        _, piece = await read_upload(file)

        def work() -> dict:
            from midilm.annotate.analyze import analyze_piece

            notes, truncated = notes_json(piece, limits.max_notes_returned)
            return {"analysis": _plain(analyze_piece(piece)), "notes": notes, "duration": round(piece.duration, 3),
                    "instruments": piece.instrument_names(), "truncated": truncated}

        return await run("tools", work)

    @app.post("/v1/render", tags=["music"], responses={**ERRORS, 200: {"content": {"audio/wav": {}}}},
              response_class=Response)
    async def render(file: Annotated[UploadFile, File(description="a MIDI file")]) -> Response:
        """The MIDI file played by FluidSynth with a General MIDI soundfont, as a 16-bit stereo WAV."""
        _, piece = await read_upload(file)
        if piece.duration > limits.max_render_seconds:
            raise HTTPException(422, f"piece is {piece.duration:.0f} s long; audio is rendered up to "
                                     f"{limits.max_render_seconds:.0f} s")
        return Response(await run("tools", lambda: _render(piece, limits)), media_type="audio/wav")

    if swagger:  # the API docs from local files: the default page loads Swagger UI from a CDN
        from fastapi.openapi.docs import get_swagger_ui_html

        app.mount("/docs-assets", StaticFiles(directory=swagger), name="docs-assets")

        @app.get("/docs", include_in_schema=False)
        async def docs():
            return get_swagger_ui_html(openapi_url="/openapi.json", title="midilm API",
                                       swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                       swagger_css_url="/docs-assets/swagger-ui.css",
                                       swagger_favicon_url="/docs-assets/favicon-32x32.png")

    # --- the studio ---

    @app.get("/", include_in_schema=False)
    async def studio() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


@dataclass
class _Form:
    """The generation fields of a multipart form, shaped like GenerateRequest for `options_for`."""

    max_tokens: int
    seed: int | None
    temperature: float
    top_p: float
    bpm: float | None
    instruments: list[str] | None
    n: int
    time_signature: str | None = None


def _history(text: str, max_turns: int) -> list[tuple[str, str]]:
    """Earlier chat turns from JSON: a list of {"question", "answer"} objects or [question, answer] pairs."""
    if not text.strip():
        return []
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise HTTPException(422, f"history: not valid JSON ({e.msg})") from None
    if not isinstance(items, list) or len(items) > max_turns:
        raise HTTPException(422, f"history: expected a JSON list of at most {max_turns} turns")
    turns = []
    for item in items:
        if isinstance(item, dict):
            q, a = item.get("question"), item.get("answer")
        elif isinstance(item, list) and len(item) == 2:
            q, a = item
        else:
            q = a = None
        if not isinstance(q, str) or not isinstance(a, str):
            raise HTTPException(422, 'history: each turn must be {"question": str, "answer": str}')
        turns.append((q, a))
    return turns


def _render(piece, limits: Limits) -> bytes:
    import os
    import tempfile

    from midilm.music.audio import render_wav

    # FluidSynth opens SDL audio at start; SDL's PulseAudio probe maps a 64 MB shared-memory file, which
    # the render's file-size limit kills (SIGXFSZ) wherever the PulseAudio client library is installed
    # (Debian's chromium brings it). Rendering to a file needs no audio device.
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

    with tempfile.TemporaryDirectory(prefix="midilm-serve-") as tmp:
        path = render_wav(piece, Path(tmp) / "out.wav", timeout=60.0, max_seconds=limits.max_render_seconds,
                          sample_rate=32000)
        return path.read_bytes()


def _plain(value: Any) -> Any:
    """JSON-safe copy (numpy numbers, tuples, non-finite floats)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _model_name(model: Any) -> str:
    path = getattr(model, "path", None) or getattr(model, "name", None) or type(model).__name__
    return Path(str(path)).name


def _understanding_name(models: Models) -> str:
    return Path(models.understanding_path).name if models.understanding_path else "understanding"


def _swagger_assets() -> Path | None:
    """Swagger UI's files from the swagger-ui-bundle package (the `serve` extra), if installed."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    path = Path(swagger_ui_path)
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("midilm")
    except Exception:
        return "0"


STUDIO_INSTRUMENTS = (
    "piano", "electric piano", "organ", "harpsichord", "acoustic guitar", "electric guitar", "bass",
    "upright bass", "violin", "viola", "cello", "strings", "harp", "choir", "trumpet", "trombone", "french horn",
    "saxophone", "clarinet", "flute", "oboe", "bassoon", "vibraphone", "marimba", "synth lead", "synth pad",
    "drums",
)

