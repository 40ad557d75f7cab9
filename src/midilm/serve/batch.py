"""Several text-to-MIDI requests in one batch: different prompts share each forward pass of the model.

A thin scheduler over `midilm.generate.pipeline.generate_many`: each request becomes a job of the one
engine, whose rows carry their own prompt (left-padded), grammar, settings and seeded generator. A row's
tokens depend only on its prompt, seed and settings, never on the requests it was batched with, so a
request gets the same tokens here as from `generate` or `midilm generate`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from midilm.generate.pipeline import GenerateOptions, Generation, Request, generate_many


@dataclass
class BatchRequest:
    """One prompt with its options; `stop()` says the caller no longer waits (timed out or gone)."""

    prompt: str
    options: GenerateOptions
    stop: Callable[[], bool] = field(default=lambda: False)
    processors: Sequence = ()  # the engine's logits hooks (see `midilm.generate.pipeline.Request`)
    uncond_caption: str | None = None


def batchable(model, options: GenerateOptions) -> bool:
    """Whether requests with these options may share a batch: every request on every backend (the engine
    writes long pieces window by window with the same rows, and a request's cost is its tokens)."""
    return hasattr(model, "layout")


def generate_batch(model, requests: list[BatchRequest]) -> list[list[Generation]]:
    """`generate` for several requests at once: one batch per window for all their samples."""
    return generate_many(model, [Request(r.prompt, r.options, stop=r.stop, processors=r.processors,
                                         uncond_caption=r.uncond_caption) for r in requests])
