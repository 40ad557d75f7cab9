"""Long pieces, continuations and accompaniment: windows of rows fed to the one engine (`engine.run_rows`).

One AMT sequence spans 100 s. A `Job` is one request: a prompt, n samples, and where its music goes on an
absolute clock (10 ms ticks, unbounded): the given part (`context`: the events of a piece to continue;
`controls`: a melody to accompany, as AMT control triplets), from where the new music starts (`start`,
the last given onset) to where it ends (`end`). Each round, every live sample of every job becomes one row:
its window starts at `offset` (at most KEEP_SECONDS before its last onset), the music it already has from
there on is re-zeroed into its context, the controls not yet forced in that fall inside the window are
its controls, and the grammar's last onset is the window's end or the job's. All rows of a round run as
one batch. New events come back window-relative and are moved onto the absolute clock here; nothing is
ever folded, and each control is forced in exactly once.

A sample's window w draws from a generator seeded by (its seed, w): its tokens do not depend on the other
samples or requests it was batched with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from midilm.codecs.amt.vocab import ATIME_OFFSET, CONTROL_OFFSET, DRUMS, MAX_TIME, NOTE_OFFSET
from midilm.generate.engine import LogitsProcessor, Row, run_rows
from midilm.generate.grammar import GrammarConfig
from midilm.generate.sampler import MusicSequence, SamplingConfig, trim_partial

KEEP_SECONDS = 45.0  # music carried into the next window as its context
CONTEXT_TOKENS = 1023  # at most this many context ids in a window (AMT's own context length)
WINDOW_TICKS = MAX_TIME - 500  # where a window that is not the last one stops
MIN_WINDOW_TOKENS = 96  # a window shorter than this (prompt and context fill the model) is not worth running


@dataclass
class Job:
    """One request: `n` samples of `prompt` (vocabulary ids ending with the start-of-music flag) on the
    absolute clock, new music from tick `start` to tick `end`."""

    prompt: list[int]
    sampling: SamplingConfig
    grammar: GrammarConfig
    seeds: list[int]
    start: int = 0
    end: int = MAX_TIME - 1
    context: list[int] = field(default_factory=list)  # AMT events, absolute times
    controls: list[int] = field(default_factory=list)  # AMT control triplets, absolute times
    processors: Sequence[LogitsProcessor] = ()
    uncond_prompt: list[int] | None = None
    stop: Callable[[], bool] | None = None


@dataclass
class Sample:
    """One sample's result: new events on the absolute clock (time, DUR_OFFSET + duration, NOTE_OFFSET +
    note; times may pass 9999), each window's ids as sampled (window-relative) with its start tick."""

    events: list[int] = field(default_factory=list)
    windows: list[tuple[int, list[int]]] = field(default_factory=list)
    reason: str = ""
    steps: int = 0

    @property
    def tokens(self) -> int:
        return sum(len(w) for _, w in self.windows)


@dataclass(eq=False)
class _State:
    job: Job
    k: int
    stream: list[tuple[int, int, int, bool]]  # every triplet so far, in order: (absolute tick, id, id, is control)
    pending: list[tuple[int, int, int, bool]]  # controls not forced in yet, by time
    sample: Sample = field(default_factory=Sample)
    offset: int = 0
    budget: int = 0
    done: bool = False

    @property
    def last_onset(self) -> int:
        return max((t[0] for t in self.stream if not t[3]), default=self.job.start)


def _triplets(ids: Sequence[int]) -> list[list[int]]:
    ids = list(ids)
    return [ids[i : i + 3] for i in range(0, len(ids) - len(ids) % 3, 3)]


def _in_window(t: tuple[int, int, int, bool], offset: int) -> list[int]:
    """A triplet of the absolute clock as ids of the window starting at `offset`."""
    return [t[0] - offset + (ATIME_OFFSET if t[3] else 0), t[1], t[2]]


def run_jobs(model, jobs: list[Job], music_offset: int, max_positions: int | None = None,
             stop_id: int | None = None) -> list[list[Sample]]:
    """Every sample of every job, written window by window; all live samples of a round form one batch."""
    states: list[_State] = []
    for job in jobs:
        controls = sorted(((t[0] - ATIME_OFFSET, t[1], t[2], True) for t in _triplets(job.controls)),
                          key=lambda t: t[0])
        context = [(t[0], t[1], t[2], False) for t in _triplets(job.context)]
        for k in range(job.sampling.n):
            st = _State(job, k, list(context), list(controls), budget=job.sampling.max_new_tokens)
            st.offset = _first_offset(st)
            states.append(st)
    window = 0
    while True:
        live = [s for s in states if not s.done]
        if not live:
            break
        rows = [r for r in (_row(s, window, music_offset, max_positions) for s in live) if r is not None]
        if rows:
            steps = run_rows(model, [r for r, _ in rows], music_offset, stop_id)
            for row, st in ((r, s) for r, s in rows):
                st.sample.steps += steps
                _take(st, row)
        window += 1
    out: list[list[Sample]] = [[] for _ in jobs]
    index = {id(job): j for j, job in enumerate(jobs)}
    for st in states:
        out[index[id(st.job)]].append(st.sample)
    return out


def _first_offset(st: _State) -> int:
    """Where a sample's first window starts: early enough for KEEP_SECONDS of its context, never after the
    first control (a control is forced into the window holding its time)."""
    offset = max(0, st.last_onset - int(KEEP_SECONDS * 100))
    offset = _fit_context(st, offset)
    if st.pending:
        offset = min(offset, st.pending[0][0])
    return max(0, offset)


def _fit_context(st: _State, offset: int) -> int:
    """Move `offset` later until the window's context holds at most CONTEXT_TOKENS ids."""
    kept = [t for t in st.stream if t[0] >= offset]
    if 3 * len(kept) <= CONTEXT_TOKENS:
        return offset
    return max(t[0] for t in kept[: len(kept) - CONTEXT_TOKENS // 3 + 1]) + 1


def _row(st: _State, window: int, music_offset: int, max_positions: int | None) -> tuple[Row, _State] | None:
    job = st.job
    context = [x for t in st.stream if t[0] >= st.offset for x in _in_window(t, st.offset)]
    controls = [x for t in st.pending if t[0] - st.offset < MAX_TIME for x in _in_window(t, st.offset)]
    prompt = job.prompt + [music_offset + t for t in context]
    tokens = st.budget
    if max_positions:  # a window's prompt, context and new ids stay within what the model was trained on
        tokens = min(tokens, max_positions - len(prompt))
    if tokens < min(MIN_WINDOW_TOKENS, st.budget):
        st.done, st.sample.reason = True, st.sample.reason or "context full"
        return None
    grammar = replace(job.grammar, max_time=min(MAX_TIME - 1, job.end - st.offset))
    grammar = _instruments_in_use(st, grammar)
    # a window that another will follow stops at 95 s, leaving the next one room to start before its end
    until = WINDOW_TICKS if st.offset + MAX_TIME - 1 < job.end else None
    seq = MusicSequence(grammar, job.sampling.constrained, context, controls, tokens, until)
    seed = job.seeds[st.k] if window == 0 else int(np.random.SeedSequence([job.seeds[st.k], window])
                                                    .generate_state(1, np.uint64)[0] >> 1)
    uncond = None if job.uncond_prompt is None else job.uncond_prompt + [music_offset + t for t in context]
    row = Row(prompt, seq, job.sampling, seed, processors=job.processors, uncond_prompt=uncond, stop=job.stop,
              tag=(id(job), st.k), offset=st.offset)
    return row, st


def _instruments_in_use(st: _State, grammar: GrammarConfig) -> GrammarConfig:
    """Once a piece holds the most melodic instruments it may, a later window (which sees only recent
    music) keeps to them."""
    used = {(t[2] - NOTE_OFFSET) // 128 for t in st.stream if not t[3]}
    if len(used - {DRUMS}) < grammar.max_melodic:
        return grammar
    allowed = used | {DRUMS} if grammar.instruments is None else used | (grammar.instruments & {DRUMS})
    return replace(grammar, instruments=frozenset(allowed))


def _take(st: _State, row: Row) -> None:
    """Move a window's new ids onto the absolute clock and decide where the next window starts."""
    job, new = st.job, trim_partial(row.tokens)
    st.sample.windows.append((st.offset, new))
    st.budget -= len(row.tokens)
    forced = 0
    for t in _triplets(new):
        control = t[0] >= CONTROL_OFFSET
        st.stream.append((t[0] - (ATIME_OFFSET if control else 0) + st.offset, t[1], t[2], control))
        if control:
            forced += 1
        else:
            st.sample.events += [t[0] + st.offset, t[1], t[2]]
    del st.pending[:forced]  # controls are forced in time order
    reason = row.seq.reason
    st.sample.reason = reason
    reached_end = reason in ("window full", "end") and st.offset + MAX_TIME - 1 >= job.end
    if reason == "cancelled" or st.budget <= 0 or reached_end or not new:
        st.done = True
        return
    last = st.last_onset
    offset = _fit_context(st, min(last, max(last - int(KEEP_SECONDS * 100), st.offset + 100)))
    if st.pending:
        offset = min(offset, st.pending[0][0])
    st.offset = max(offset, st.offset + 1)
