"""The server's limits and its request and response bodies (pydantic), with every bound in the OpenAPI spec.

Limits are settings of a server (`midilm serve --max-tokens ...`), so the request models are built for
a given `Limits`: what the spec advertises is exactly what the server accepts.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from midilm.music.gm import program_from_word

METER = re.compile(r"^(\d{1,2})/(1|2|4|8|16|32)$")


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int = 2000
    max_tokens: int = 4096
    default_tokens: int = 1024
    max_samples: int = 8
    max_seconds: float = 600.0  # music requested per generation
    max_instruments: int = 16
    max_upload_bytes: int = 2 << 20
    max_question_chars: int = 500
    max_history_turns: int = 20
    timeout: float = 120.0  # per request, queueing included
    queue_size: int = 64
    max_batch: int = 16
    max_render_seconds: float = 300.0  # audio rendered per request
    max_notes_returned: int = 50_000

    def as_dict(self) -> dict:
        return asdict(self)


def parse_instruments(words: list[str] | None) -> list[str] | None:
    """Instrument words, each checked against the General MIDI names; None or [] means "from the prompt"."""
    if not words:
        return None
    out = []
    for w in words:
        w = w.strip()
        if not w:
            continue
        program_from_word(w)  # ValueError names the unknown word
        out.append(w)
    return out or None


def parse_meter(text: str | None) -> tuple[int, int] | None:
    if text is None or not text.strip():
        return None
    m = METER.match(text.strip())
    if not m or not 1 <= int(m.group(1)) <= 64:
        raise ValueError(f"time_signature must look like 3/4, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def request_models(limits: Limits) -> dict[str, type[BaseModel]]:
    """GenerateRequest for these limits (its JSON schema carries the bounds)."""

    class GenerateRequest(BaseModel):
        """Text -> MIDI. Instruments, tempo and meter not given are read from the prompt."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
            {"prompt": "A gentle lullaby in F major for piano and strings at 70 bpm", "max_tokens": 300,
             "seed": 7, "temperature": 1.0, "top_p": 0.98, "n": 1, "seconds": 30}]})

        prompt: str = Field(min_length=1, max_length=limits.max_prompt_chars, description="what to write")
        max_tokens: int = Field(limits.default_tokens, ge=3, le=limits.max_tokens,
                                description="new music tokens per sample (3 per note)")
        seed: int | None = Field(None, ge=0, lt=2**32, description="same seed and settings, same music")
        # below 0.01 sampling is greedy anyway, and logits / 1e-300 overflow to inf
        temperature: float = Field(1.0, ge=0.01, le=2, allow_inf_nan=False, description="lower is more predictable")
        top_p: float = Field(0.98, gt=0, le=1, allow_inf_nan=False)
        bpm: float | None = Field(None, ge=20, le=300, allow_inf_nan=False,
                                  description="tempo grid (default: the prompt's, else estimated from the notes)")
        time_signature: str | None = Field(None, max_length=5, description="e.g. 3/4 (default: the prompt's, or 4/4)")
        instruments: list[Annotated[str, Field(min_length=1, max_length=40)]] | None = Field(
            None, max_length=limits.max_instruments,
            description="allow-list of General MIDI instrument words (piano, violin, drums, ...)")
        n: int = Field(1, ge=1, le=limits.max_samples, description="samples")
        seconds: float | None = Field(None, gt=0, le=limits.max_seconds, allow_inf_nan=False,
                                      description="stop after this much music (default: a length the prompt "
                                                  "implies, 16 bars within 30-60 s, or the token budget for "
                                                  "a continuation)")
        # steering (midilm.generate.steering): strengths in nats, null: the default, 0: off
        steer: bool = Field(True, description="steer toward the prompt's key, tempo and meter (false: the model "
                                              "alone, unless a strength is given)")
        key: str | None = Field(None, max_length=24, description='key to steer toward, e.g. "F# minor" (default: '
                                                                 "the one the prompt names)")
        key_prior: float | None = Field(None, ge=0, le=100, allow_inf_nan=False,
                                        description="pull toward the key's scale, tonic triad most")
        beat_grid: float | None = Field(None, ge=0, le=100, allow_inf_nan=False,
                                        description="pull onsets onto the 16th grid of the tempo, beats most")
        gap_penalty: float | None = Field(None, ge=0, le=100, allow_inf_nan=False,
                                          description="per beat of silence past max_gap_beats")
        max_gap_beats: float | None = Field(None, gt=0, le=64, allow_inf_nan=False,
                                            description="beats between onsets before the gap penalty starts")
        cfg: float | None = Field(None, ge=0, le=20, allow_inf_nan=False,
                                  description="classifier-free guidance scale against the empty description "
                                              "(default 1: off; another scale doubles the work)")
        melody_steps: float | None = Field(None, ge=0, le=100, allow_inf_nan=False,
                                           description="melodic motion (with a key): a note under a half note "
                                                       "is drawn to a scale step from its instrument's previous "
                                                       "top note, away from repeating it")
        sustain: float | None = Field(None, ge=0, le=100, allow_inf_nan=False,
                                      description="durations under a beat lose up to this much, the shorter the "
                                                  "more")
        balance: float | None = Field(None, ge=0, le=100, allow_inf_nan=False,
                                      description="with two or more instruments asked for: each is drawn toward "
                                                  "a fair share of the recent notes (drums count double), up to "
                                                  "this much either way")
        established_key: float | None = Field(None, ge=0, le=100, allow_inf_nan=False,
                                              description="with no key given: once the piece has established one "
                                                          "(from its notes so far), tones outside it lose this "
                                                          "much")

        @field_validator("instruments")
        @classmethod
        def _instruments(cls, v: list[str] | None) -> list[str] | None:
            return parse_instruments(v)

        @field_validator("key")
        @classmethod
        def _key(cls, v: str | None) -> str | None:
            if v is not None:
                from midilm.generate.steering import parse_key

                parse_key(v)  # ValueError names the bad key
            return v

        @field_validator("time_signature")
        @classmethod
        def _meter(cls, v: str | None) -> str | None:
            parse_meter(v)
            return v

        @field_validator("prompt")
        @classmethod
        def _prompt(cls, v: str) -> str:
            if not v.strip():
                raise ValueError("prompt is empty")
            if "\x00" in v:
                raise ValueError("prompt contains a NUL character")
            return v

    return {"GenerateRequest": GenerateRequest}


class Sample(BaseModel):
    midi_base64: str = Field(description="a Standard MIDI File, base64")
    tokens: list[int] = Field(description="the AMT ids sampled")
    settings: dict[str, Any] = Field(description="everything used to make it (the CLI's JSON sidecar)")
    notes: list[list[float]] = Field(description="[start s, end s, pitch, velocity, program (128 = drums)] per note")
    duration: float
    instruments: list[str]


class GenerateResponse(BaseModel):
    model: str
    elapsed_seconds: float
    batched_with: int = Field(description="requests that shared this request's batch (1 = alone)")
    samples: list[Sample]


class DescribeResponse(BaseModel):
    caption: str
    model: str
    elapsed_seconds: float


class AskResponse(BaseModel):
    answer: str
    question: str
    model: str
    elapsed_seconds: float


class AnalyzeResponse(BaseModel):
    analysis: dict[str, Any]
    notes: list[list[float]]
    duration: float
    instruments: list[str]
    truncated: bool = Field(description="notes were cut to the server's limit")


class ErrorResponse(BaseModel):
    detail: str
