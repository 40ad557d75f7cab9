"""The one engine and its schedulers with the shipped model: rows of different prompts in one batch, the
logits hook and the unconditioned branch, windows past 275 s and across a long melody, `--n` as one batch,
and the same tokens from every entry point (command line, Python API, server, alone or batched)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from midilm.codecs.amt import vocab  # noqa: E402
from midilm.codecs.amt.lines import as_controls  # noqa: E402
from midilm.generate.cli import default_model_path  # noqa: E402
from midilm.generate.engine import Row, guidance, run_rows  # noqa: E402
from midilm.generate.grammar import TIME, GrammarConfig  # noqa: E402
from midilm.generate.pipeline import GenerateOptions, Request, generate, generate_many  # noqa: E402
from midilm.generate.sampler import MusicSequence, SamplingConfig, row_seeds  # noqa: E402

MODEL = default_model_path()
pytestmark = pytest.mark.skipif(not MODEL.is_dir(), reason="no default model shipped in this checkout")


def _row(m, caption: str, seed: int, tokens: int = 45, **kw) -> Row:
    grammar = GrammarConfig.make(None, max_time=1999)
    return Row(m.prompt_ids(caption), MusicSequence(grammar, max_new_tokens=tokens), SamplingConfig(), seed, **kw)


def test_a_row_gets_the_same_tokens_alone_and_beside_rows_of_other_lengths(model):
    # exact token equality holds in practice: batching changes the logits by float rounding (~1e-6), far
    # below the gap a sampled id would need to flip; the server test below relies on the same
    alone = _row(model, "a calm piano piece", 5)
    run_rows(model.model, [alone], model.layout.music_offset)
    batch = [_row(model, "jazz", 1), _row(model, "a calm piano piece", 5),
             _row(model, "an upbeat rock song with drums, electric guitar and bass at 140 bpm", 9, tokens=21)]
    run_rows(model.model, batch, model.layout.music_offset)
    # (a row may end before its 45 ids by choosing an onset past its 20 s end)
    assert batch[1].tokens == alone.tokens and len(alone.tokens) >= 30 and len(alone.tokens) % 3 == 0
    assert len(batch[2].tokens) == 21 and batch[0].tokens != batch[1].tokens


def test_processors_see_the_allowed_block_and_steer_the_draw(model):
    seen, forced = [], []

    def lowest_note(row, choice, logits):
        seen.append((row.seq.state.slot, choice.lo, choice.hi, logits.shape))
        if choice.mask is None:
            return logits
        keep = np.full_like(logits, -np.inf)
        first = int(np.flatnonzero(choice.mask)[0])
        keep[first] = 0.0
        forced.append(choice.lo + first)
        return keep

    row = _row(model, "piano", 3, tokens=30, processors=[lowest_note])
    run_rows(model.model, [row], model.layout.music_offset)
    notes = row.tokens[2::3]
    # each note is the one the processor left (the lowest the grammar allows there); the first note of a
    # piece may be anything, so it is instrument 0, pitch 0. Later ones at the same onset move up by one
    # because the grammar forbids the same note twice at one onset.
    assert notes == forced and notes[0] == vocab.NOTE_OFFSET
    assert all(shape == (hi - lo,) for _, lo, hi, shape in seen) and len(seen) == 30


def test_the_unconditioned_branch_is_fed_the_same_ids(model):
    gaps = []

    def compare(row, choice, logits):
        finite = np.isfinite(logits)
        gaps.append(float(np.abs(logits[finite] - row.uncond_logits[finite]).max()))
        return logits

    same = _row(model, "piano", 4, tokens=24, processors=[compare], uncond_prompt=model.prompt_ids("piano"))
    run_rows(model.model, [same], model.layout.music_offset)
    assert len(gaps) == 24 and max(gaps) < 1e-3  # the same prompt: the same logits up to batching's rounding
    gaps.clear()
    other = _row(model, "piano", 4, tokens=24, processors=[compare, guidance(3.0)],
                 uncond_prompt=model.prompt_ids(""))
    run_rows(model.model, [other], model.layout.music_offset)
    assert max(gaps) > 0.01 and len(other.tokens) == 24


def _push_time(row, choice, logits):
    """Always the latest onset the grammar allows: every note starts max_gap (4 s) after the last one."""
    if row.seq.state.slot != TIME:
        return logits
    out = np.full_like(logits, -np.inf)
    out[-1] = 0.0
    return out


def test_windows_run_past_275_s_without_folding(model):
    gens = generate(model, "a slow drum solo", GenerateOptions(seed=1, seconds=320, max_tokens=600),
                    processors=[_push_time])
    g = gens[0]
    onsets = np.sort(g.piece.start)
    assert g.settings["windows"] >= 4 and g.settings["decode"]["dropped"] == 0
    assert g.settings["decode"]["controls_folded"] == 0
    assert 316 <= onsets[-1] <= 320.0 and np.allclose(np.diff(np.unique(np.round(onsets, 2))), 4.0, atol=0.02)
    times = g.tokens[0::3]  # new events on the absolute clock, past 9999 ticks
    assert times == sorted(times) and max(times) > vocab.CONTROL_OFFSET


def test_every_control_of_a_long_melody_is_forced_once(model):
    melody = []
    for k in range(260):  # 130 s of flute
        melody += [k * 50, vocab.DUR_OFFSET + 30, vocab.NOTE_OFFSET + 73 * 128 + 72 + k % 12]
    controls = as_controls(melody)
    from midilm.generate.schedule import Job, run_jobs

    plan_seed = row_seeds(2, 1)[1]
    job = Job(model.prompt_ids("piano")[:-1] + [model.layout.music_id(vocab.ANTICIPATE)],
              SamplingConfig(max_new_tokens=1400), GrammarConfig.make([0]), plan_seed, 0, 13100, [], controls,
              processors=[_push_time])
    sample = run_jobs(model.model, [job], model.layout.music_offset, model.max_positions)[0][0]
    forced = [(t[0] - vocab.ATIME_OFFSET + off, t[1], t[2]) for off, ids in sample.windows
              for t in (ids[i : i + 3] for i in range(0, len(ids), 3)) if t[0] >= vocab.CONTROL_OFFSET]
    given = [(t[0] - vocab.ATIME_OFFSET, t[1], t[2]) for t in (controls[i : i + 3] for i in range(0, len(controls), 3))]
    assert forced == given  # each melody note forced in exactly once, in order, at its own time
    assert len(sample.windows) >= 2 and all(n < vocab.CONTROL_OFFSET for n in sample.events[2::3])


class CountingDecoder:
    """The transformers decoder, counting how many batches it starts and of how many rows."""

    def __init__(self, inner):
        self.inner, self.starts = inner, []

    def start(self, *args):
        self.starts.append(len(args[0]) if isinstance(args[0][0], list) else args[1])
        return self.inner.start(*args)

    def feed(self, ids):
        return self.inner.feed(ids)

    def logits(self, i, lo, hi):
        return self.inner.logits(i, lo, hi)


def test_n_samples_without_seconds_run_as_one_batch(model):
    from dataclasses import replace

    from midilm.generate.backends.transformers import TransformersDecoder

    spy = CountingDecoder(TransformersDecoder(model.model))
    gens = generate(replace(model, model=spy), "a piano waltz", GenerateOptions(seed=0, n=3, max_tokens=30))
    assert spy.starts == [3] and len(gens) == 3 and len({tuple(g.tokens) for g in gens}) == 3


def test_same_tokens_from_cli_api_and_server_alone_or_batched(model, tmp_path):
    from fastapi.testclient import TestClient

    from midilm.cli import main
    from midilm.serve.app import Models, create_app
    from midilm.serve.batch import BatchRequest, generate_batch

    prompt, opts = "a calm piano piece in C major", GenerateOptions(seed=11, max_tokens=36, seconds=30, n=2)
    api = [g.tokens for g in generate(model, prompt, opts)]
    assert main(["generate", prompt, "-o", str(tmp_path / "c.mid"), "--seed", "11", "--max-tokens", "36",
                 "--seconds", "30", "--n", "2", "--threads", "1"]) == 0
    cli = [json.loads((tmp_path / f"c-{k}.tokens.json").read_text()) for k in (1, 2)]
    other = Request("an upbeat rock song with drums and bass", GenerateOptions(seed=3, max_tokens=60, seconds=200))
    batched = generate_many(model, [other, Request(prompt, opts)])[1]
    server_batch = generate_batch(model, [BatchRequest(prompt, opts), BatchRequest(other.prompt, other.options)])[0]
    with TestClient(create_app(Models(t2m=model))) as client:
        r = client.post("/v1/generate", json={"prompt": prompt, "seed": 11, "max_tokens": 36, "seconds": 30, "n": 2})
    assert r.status_code == 200, r.text
    http = [s["tokens"] for s in r.json()["samples"]]
    assert api == cli == [g.tokens for g in batched] == [g.tokens for g in server_batch] == http
    assert api[0] != api[1]


def test_preset_midi_llm_samples_as_the_release_does(model):
    from midilm.generate.pipeline import _plan

    opts = GenerateOptions(preset="midi-llm", temperature=0.5, top_p=0.5, max_tokens=10, instruments=["piano"])
    plan = _plan(model, Request("a jazz tune", opts))
    s = plan.job.sampling
    assert (s.temperature, s.top_p, s.top_k, s.max_new_tokens, s.constrained) == (1.0, 0.98, 0, 2046, False)
    assert plan.job.grammar.instruments is None and plan.job.end == vocab.MAX_TIME - 1
    seq = MusicSequence(plan.job.grammar, s.constrained)
    c = seq.choice()
    assert (c.lo, c.hi, c.mask) == (0, vocab.SEPARATOR + 1, None)  # any music id, no grammar


def test_a_length_limited_piece_ends_instead_of_piling_notes_on_its_last_tick(model):
    # pushed to the latest onset it may take, a row used to be clamped to the last tick and stack notes there
    # until the onset was full; a time past the end now ends the piece
    row = _row(model, "piano", 6, tokens=300, processors=[_push_time])
    run_rows(model.model, [row], model.layout.music_offset)
    onsets = row.tokens[0::3]
    assert row.seq.reason == "end" and onsets == [400, 800, 1200, 1600]


def test_near_the_end_a_time_past_it_may_be_chosen_and_ends_the_piece():
    # 5 ticks before the end, the later onsets the model wants lie mostly past it: cut off, their mass went to
    # the current onset and the piece ended on a stack of notes; now they are choices that end it
    seq = MusicSequence(GrammarConfig.make(None, max_time=1999), max_new_tokens=300)
    for onset in (400, 800, 1200, 1600, 1994):  # no gap over max_gap (4 s) on the way
        for amt in (onset, vocab.DUR_OFFSET + 50, vocab.NOTE_OFFSET + 60):
            seq.accept(amt)
    choice = seq.choice()
    assert choice.lo == 1994 and choice.hi == 1994 + 400 + 1  # max_gap 4 s past the current onset
    seq.accept(2100)
    assert seq.done and seq.reason == "end" and seq.tokens[-1] == vocab.NOTE_OFFSET + 60
    early = MusicSequence(GrammarConfig.make(None, max_time=1999), max_new_tokens=300)
    for amt in (100, vocab.DUR_OFFSET + 50, vocab.NOTE_OFFSET + 60):
        early.accept(amt)
    assert early.choice().hi == 100 + 400 + 1  # far from the end nothing changes
