"""The HTTP API and the studio: a FastAPI app over loaded models, each behind its own bounded worker.

`create_app` builds one `ServerState` (models, limits, workers), hands it to the endpoints as a dependency,
and includes one router per job (`midilm.serve.routers`): service, text to MIDI (its own worker, with
batching), understanding (its own worker), analysis and audio (a pool of two), and the studio. So a long
generation never blocks a caption. Every error is JSON `{"detail": "..."}`; bad input is a 4xx, never a 5xx.
"""

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from midilm.serve.routers import analysis, generate, service, studio, understand
from midilm.serve.schemas import Limits
from midilm.serve.state import Models, ServerState

__all__ = ["BodyLimit", "Models", "create_app"]

log = logging.getLogger("midilm.serve")


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


def create_app(models: Models | None = None, limits: Limits | None = None) -> FastAPI:
    """The API and studio over `models` (loaded by the caller, once); limits as given or the defaults."""
    state = ServerState(models or Models(), limits or Limits())
    state.workers = {"generate": generate.make_worker(state), "understand": understand.make_worker(state),
                     "tools": analysis.make_worker(state)}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for w in state.workers.values():
            w.start()
        yield
        for w in state.workers.values():
            await w.stop()

    swagger = studio.swagger_assets()
    app = FastAPI(
        title="midilm", version=_version(), lifespan=lifespan, redoc_url=None,
        docs_url=None if swagger else "/docs",
        description="Text to MIDI, MIDI continuation, captions and questions about MIDI files. "
                    "The studio is at `/`. Every error is JSON `{\"detail\": \"...\"}`.",
    )
    app.state.server = state
    # multipart framing and the other fields need a little room beside the file itself
    app.add_middleware(BodyLimit, limit=state.limits.max_upload_bytes + 64 * 1024,
                       files_kib=state.limits.max_upload_bytes // 1024)
    _error_handlers(app)
    app.include_router(service.make_router())
    app.include_router(generate.make_router(state.limits))
    app.include_router(understand.make_router(state.limits))
    app.include_router(analysis.make_router(state.limits))
    app.include_router(studio.make_router(swagger))
    studio.mount_files(app, swagger)
    return app


def _error_handlers(app: FastAPI) -> None:
    """Every error as JSON {"detail": "..."}: validation 422 with the fields named, HTTP errors as raised, and a
    bug as a 500 that names only the exception type (the trace goes to the log)."""

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


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("midilm")
    except Exception:
        return "0"
