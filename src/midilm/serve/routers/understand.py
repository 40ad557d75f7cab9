"""Captions and questions: `POST /v1/describe` and `POST /v1/ask`.

The understanding model has its own "understand" worker (captions batch with captions, first questions with
first questions). `model=analysis` answers from the analysis of the notes instead
(`midilm.understand.analysis`): no model needed, on the "tools" pool.
"""

import json
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, UploadFile

from midilm.serve.schemas import AskResponse, DescribeResponse, Limits
from midilm.serve.state import ERRORS, ServerState, State, read_upload, run, understanding_name
from midilm.serve.worker import Job, Worker

UNDERSTANDING_MISSING = "understanding model not available"
ANALYSIS = "analysis"


def _model_field() -> Any:
    return Form(pattern=f"^({ANALYSIS})?$", description=(
        "empty: the server's understanding model; 'analysis': answer from the analysis of the notes (key, "
        "tempo, meter, instruments, texture, dynamics, ...), which needs no model"))


@dataclass
class AskJob:
    """A caption (no question) or an answer, with the chat's earlier (question, answer) turns."""

    piece: Any
    question: str | None = None
    history: list[tuple[str, str]] = field(default_factory=list)


def _run_one(state: ServerState, job: Job) -> str:
    p = job.payload
    if p.question is None:
        return state.models.understanding.describe(p.piece)
    return state.models.understanding.ask(p.piece, p.question, history=p.history or None)


def _run_batch(state: ServerState, jobs: list[Job]) -> list[str]:
    # captions batch with captions, first questions with first questions (the model's *_many calls)
    pieces = [j.payload.piece for j in jobs]
    if jobs[0].payload.question is None:
        return state.models.understanding.describe_many(pieces)
    return state.models.understanding.ask_many(pieces, [j.payload.question for j in jobs])


def make_worker(state: ServerState) -> Worker:
    """The thread that owns the understanding model."""
    return Worker("understand", partial(_run_one, state), partial(_run_batch, state),
                  queue_size=state.limits.queue_size, max_batch=state.limits.max_batch)


def _analysis_answerer(state: ServerState):
    from midilm.understand.analysis import AnalysisAnswerer

    if state.analysis is None:
        state.analysis = AnalysisAnswerer(caption="summary")
    return state.analysis


async def _answer(state: ServerState, model: str, job: AskJob, batch_key: str | None) -> tuple[str, str]:
    """(text, model name): from the analysis on the tools pool, or from the understanding model."""
    if model == ANALYSIS:
        answerer = _analysis_answerer(state)
        if job.question is None:
            return str(await run(state, "tools", lambda: answerer.describe(job.piece))), ANALYSIS
        return str(await run(state, "tools", lambda: answerer.ask(job.piece, job.question))), ANALYSIS
    if state.models.understanding is None:
        why = state.models.understanding_error or "not loaded"
        raise HTTPException(503, f"{UNDERSTANDING_MISSING}: {why} (model=analysis answers from the analysis)")
    return str(await run(state, "understand", job, batch_key)), understanding_name(state.models)


def history_turns(text: str, max_turns: int) -> list[tuple[str, str]]:
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


def make_router(limits: Limits) -> APIRouter:
    router = APIRouter(tags=["understanding"])

    @router.post("/v1/describe", response_model=DescribeResponse, responses=ERRORS)
    async def describe(
        state: State,
        file: Annotated[UploadFile, File(description="a MIDI file")],
        model: Annotated[str, _model_field()] = "",
    ) -> dict:
        """A caption of an uploaded MIDI file, written by the understanding model (or from the analysis)."""
        _, piece = await read_upload(state, file)
        t0 = time.perf_counter()
        caption, name = await _answer(state, model, AskJob(piece), batch_key="describe")
        return {"caption": caption, "model": name, "elapsed_seconds": round(time.perf_counter() - t0, 3)}

    @router.post("/v1/ask", response_model=AskResponse, responses=ERRORS)
    async def ask(
        state: State,
        file: Annotated[UploadFile, File(description="a MIDI file")],
        question: Annotated[str, Form(min_length=1, max_length=limits.max_question_chars)],
        history: Annotated[str, Form(max_length=50_000, description=(
            'earlier turns as JSON: [{"question": "...", "answer": "..."}, ...]'))] = "",
        model: Annotated[str, _model_field()] = "",
    ) -> dict:
        """Answer a question about an uploaded MIDI file (earlier turns of the chat in `history`)."""
        if not question.strip() or "\x00" in question:
            raise HTTPException(422, "question is empty or holds a NUL character")
        turns = history_turns(history, limits.max_history_turns)
        _, piece = await read_upload(state, file)
        t0 = time.perf_counter()
        answer, name = await _answer(state, model, AskJob(piece, question, turns),
                                     batch_key=None if turns else "ask")
        return {"answer": answer, "question": question, "model": name,
                "elapsed_seconds": round(time.perf_counter() - t0, 3)}

    return router
