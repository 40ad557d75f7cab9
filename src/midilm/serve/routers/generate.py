"""Text to MIDI: `POST /v1/generate` and `POST /v1/continue`, on the "generate" worker.

Generations are batched together (`midilm.serve.batch`); continuations run one by one through
`midilm.generate.pipeline.generate`, exactly as `midilm generate --continue` runs them: the output holds the
whole upload (its notes at their times, its tempo map and meter) followed by `seconds` of new music.
"""

import base64
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, UploadFile

from midilm.errors import MidilmError
from midilm.serve.schemas import GenerateResponse, Limits, parse_instruments, parse_meter, request_models
from midilm.serve.state import ERRORS, ServerState, State, model_name, notes_json, read_upload, run
from midilm.serve.worker import Job, Worker


@dataclass
class GenJob:
    prompt: str
    options: Any  # GenerateOptions
    context: list[int] = field(default_factory=list)  # the AMT events of the piece to continue
    given: Any = None  # that piece (Piece): its notes, tempo map and meter are kept


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


def sample_json(gen, limit: int) -> dict:
    from midilm.music.midi_io import midi_bytes

    notes, _ = notes_json(gen.piece, limit)
    return {"midi_base64": base64.b64encode(midi_bytes(gen.piece)).decode("ascii"), "tokens": list(gen.tokens),
            "settings": gen.settings, "notes": notes, "duration": round(gen.piece.duration, 3),
            "instruments": gen.piece.instrument_names()}


def options_for(body: Any, seconds: float | None) -> Any:
    from midilm.generate.pipeline import GenerateOptions

    return GenerateOptions(seed=body.seed, max_tokens=body.max_tokens, seconds=seconds, bpm=body.bpm,
                           time_signature=parse_meter(body.time_signature), instruments=body.instruments,
                           n=body.n, temperature=body.temperature, top_p=body.top_p, **steering_options(body))


def steering_options(body: Any) -> dict:
    """The steering fields of a request body (/v1/continue's has none: its defaults then apply)."""
    names = ("steer", "key", "key_prior", "beat_grid", "gap_penalty", "max_gap_beats", "cfg", "melody_steps",
             "sustain", "established_key", "balance")
    return {k: getattr(body, k) for k in names if hasattr(body, k)}


def _run_one(state: ServerState, job: Job) -> tuple[list[dict], int]:
    from midilm.generate.pipeline import generate

    p = job.payload
    gens = generate(state.models.t2m, p.prompt, p.options, p.context, given=p.given)
    return [sample_json(g, state.limits.max_notes_returned) for g in gens], 1


def _run_batch(state: ServerState, jobs: list[Job]) -> list:
    from midilm.serve.batch import BatchRequest, generate_batch

    reqs = [BatchRequest(j.payload.prompt, j.payload.options, j.stop) for j in jobs]
    out = generate_batch(state.models.t2m, reqs)
    return [([sample_json(g, state.limits.max_notes_returned) for g in gens], len(jobs)) for gens in out]


def make_worker(state: ServerState) -> Worker:
    """The thread that owns the text-to-MIDI model."""
    return Worker("generate", partial(_run_one, state), partial(_run_batch, state),
                  queue_size=state.limits.queue_size, max_batch=state.limits.max_batch)


def _need_t2m(state: ServerState) -> None:
    if state.models.t2m is None:
        raise HTTPException(503, "text-to-MIDI model not loaded")


def _response(state: ServerState, result: tuple[list[dict], int], t0: float) -> dict:
    samples, batched = result
    return {"model": model_name(state.models.t2m), "elapsed_seconds": round(time.perf_counter() - t0, 3),
            "batched_with": batched, "samples": samples}


def make_router(limits: Limits) -> APIRouter:
    router = APIRouter(tags=["music"])
    GenerateRequest = request_models(limits)["GenerateRequest"]  # noqa: N806 (a class built for these limits)

    @router.post("/v1/generate", response_model=GenerateResponse, responses=ERRORS)
    async def generate_midi(body: GenerateRequest, state: State) -> dict:  # type: ignore[valid-type]
        """Write MIDI from a text prompt: `n` samples, each as base64 MIDI with its tokens, notes and settings."""
        _need_t2m(state)
        from midilm.serve.batch import batchable

        t0 = time.perf_counter()
        options = options_for(body, body.seconds)
        key = "window" if batchable(state.models.t2m, options) else None
        return _response(state, await run(state, "generate", GenJob(body.prompt, options), key), t0)

    @router.post("/v1/continue", response_model=GenerateResponse, responses=ERRORS)
    async def continue_midi(
        state: State,
        file: Annotated[UploadFile, File(description="the MIDI file to continue (all of it is kept)")],
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
        """Continue an uploaded piece: each sample holds all of its notes, on its tempo map and meter, followed
        by the new music (from its last onset on; `seconds` counts only the new music)."""
        _need_t2m(state)
        from midilm.codecs.amt.encode import encode_midi

        t0 = time.perf_counter()
        data, piece = await read_upload(state, file)
        words = [w for w in instruments.split(",") if w.strip()]
        if len(words) > limits.max_instruments:
            raise HTTPException(422, f"instruments: at most {limits.max_instruments}")
        if "\x00" in prompt:
            raise HTTPException(422, "prompt contains a NUL character")
        try:
            words = parse_instruments(words)
            context = encode_midi(data)
        except (MidilmError, ValueError) as e:
            raise HTTPException(422, str(e)) from None
        body = _Form(max_tokens=max_tokens, seed=seed, temperature=temperature, top_p=top_p, bpm=bpm,
                     instruments=words, n=n)
        options = options_for(body, seconds)
        return _response(state, await run(state, "generate", GenJob(prompt, options, context, piece)), t0)

    return router
