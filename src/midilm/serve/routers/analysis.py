"""Measured facts and audio of an upload: `POST /v1/analyze` and `POST /v1/render`, on the "tools" pool
(two threads, so that neither waits behind a generation or a caption)."""

import os
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, UploadFile
from fastapi.responses import Response

from midilm.serve.schemas import AnalyzeResponse, Limits
from midilm.serve.state import ERRORS, ServerState, State, notes_json, plain, read_upload, run
from midilm.serve.worker import Worker


def make_worker(state: ServerState) -> Worker:
    """Jobs here are plain callables (analysis, rendering, the analysis answerer)."""
    return Worker("tools", lambda job: job.payload(), queue_size=state.limits.queue_size, threads=2)


def wav_bytes(piece, limits: Limits) -> bytes:
    from midilm.music.audio import render_wav

    # FluidSynth opens SDL audio at start; SDL's PulseAudio probe maps a 64 MB shared-memory file, which
    # the render's file-size limit kills (SIGXFSZ) wherever the PulseAudio client library is installed
    # (Debian's chromium brings it). Rendering to a file needs no audio device.
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

    with tempfile.TemporaryDirectory(prefix="midilm-serve-") as tmp:
        path = render_wav(piece, Path(tmp) / "out.wav", timeout=60.0, max_seconds=limits.max_render_seconds,
                          sample_rate=32000)
        return path.read_bytes()


def make_router(limits: Limits) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/analyze", tags=["understanding"], response_model=AnalyzeResponse, responses=ERRORS)
    async def analyze(state: State, file: Annotated[UploadFile, File(description="a MIDI file")]) -> dict:
        """Measured facts of an uploaded MIDI file (key, tempo, meter, instruments, texture, ...) and its notes."""
        _, piece = await read_upload(state, file)

        def work() -> dict:
            from midilm.annotate.analyze import analyze_piece

            notes, truncated = notes_json(piece, limits.max_notes_returned)
            return {"analysis": plain(analyze_piece(piece)), "notes": notes, "duration": round(piece.duration, 3),
                    "instruments": piece.instrument_names(), "truncated": truncated}

        return await run(state, "tools", work)

    @router.post("/v1/render", tags=["music"], responses={**ERRORS, 200: {"content": {"audio/wav": {}}}},
                 response_class=Response)
    async def render(state: State, file: Annotated[UploadFile, File(description="a MIDI file")]) -> Response:
        """The MIDI file played by FluidSynth with a General MIDI soundfont, as a 16-bit stereo WAV."""
        _, piece = await read_upload(state, file)
        if piece.duration > limits.max_render_seconds:
            raise HTTPException(422, f"piece is {piece.duration:.0f} s long; audio is rendered up to "
                                     f"{limits.max_render_seconds:.0f} s")
        return Response(await run(state, "tools", lambda: wav_bytes(piece, limits)), media_type="audio/wav")

    return router
