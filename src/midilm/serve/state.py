"""What the server's routers share: the loaded models, the limits and the workers (one `ServerState`, built
by `create_app` and injected into each endpoint as a FastAPI dependency), and the helpers every router
uses to read an upload and to queue work on a worker."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, HTTPException, Request, UploadFile

from midilm.errors import MidilmError, MidiReadError
from midilm.serve.schemas import ErrorResponse, Limits
from midilm.serve.worker import Busy, TimedOut, Worker

ERRORS = {code: {"model": ErrorResponse} for code in (413, 422, 429, 503, 504)}


@dataclass
class Models:
    """What the server loaded at start; `understanding_error` says why there is no understanding model."""

    t2m: Any = None
    t2m_backend: str = "transformers"
    understanding: Any = None
    understanding_path: str | None = None
    understanding_error: str | None = None
    t2m_device: str | None = None  # None: the loader's default, the CPU
    understanding_device: str | None = None


@dataclass
class ServerState:
    """One server's models, limits and workers (by name: "generate", "understand", "tools")."""

    models: Models
    limits: Limits
    workers: dict[str, Worker] = field(default_factory=dict)
    analysis: Any = None  # the analysis answerer (midilm.understand.analysis), made on first use


def server_state(request: Request) -> ServerState:
    return request.app.state.server


State = Annotated[ServerState, Depends(server_state)]


async def run(state: ServerState, worker: str, payload: Any, batch_key: str | None = None) -> Any:
    """A job's result from a worker, with a full queue as 429, a passed deadline as 504 and bad input as 422."""
    try:
        return await state.workers[worker].submit(payload, state.limits.timeout, batch_key)
    except Busy as e:
        raise HTTPException(429, str(e), headers={"Retry-After": "2"}) from None
    except TimedOut as e:
        raise HTTPException(504, str(e)) from None
    except (MidilmError, ValueError) as e:
        raise HTTPException(422, str(e)) from None


async def read_upload(state: ServerState, file: UploadFile) -> tuple[bytes, Any]:
    """The bytes and the Piece of an uploaded MIDI file; too large is 413, empty or unreadable 422."""
    from midilm.music.midi_io import read_midi

    limit = state.limits.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"file over the {limit // 1024} KiB limit")
    if not data:
        raise HTTPException(422, "the file is empty")
    try:
        piece = read_midi(data)
    except MidiReadError as e:
        raise HTTPException(422, f"not a readable MIDI file: {e.reason}") from None
    return data, piece


def notes_json(piece, limit: int) -> tuple[list[list[float]], bool]:
    """[start s, end s, pitch, velocity, program] per note, the first `limit` by onset."""
    if not len(piece):
        return [], False
    k = min(len(piece), limit)
    cols = np.stack([np.round(piece.start[:k], 3), np.round(piece.end[:k], 3), piece.pitch[:k],
                     piece.velocity[:k], piece.program[:k]], axis=1)
    return cols.tolist(), len(piece) > limit


def plain(value: Any) -> Any:
    """JSON-safe copy (numpy numbers, tuples, non-finite floats)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def model_name(model: Any) -> str:
    path = getattr(model, "path", None) or getattr(model, "name", None) or type(model).__name__
    return Path(str(path)).name


def understanding_name(models: Models) -> str:
    return Path(models.understanding_path).name if models.understanding_path else "understanding"
