"""The vLLM backend's grammar core on CPU (no vLLM needed), and the real vLLM run where vLLM and a GPU exist.

The core is driven the way vLLM drives it: a decoding loop over the shipped model's full-vocabulary
logits, the processor updating its state from the output ids (the V1 runner's way) or from each row's
position and input id (Model Runner V2's way), masking the row, then the engine picking the token.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from midilm.codecs.amt import vocab  # noqa: E402
from midilm.codecs.amt.decode import decode_tokens  # noqa: E402
from midilm.codecs.amt.lines import as_controls  # noqa: E402
from midilm.generate.backends.vllm import (  # noqa: E402
    ARGS_KEY,
    GrammarBatch,
    parse_output,
    request_args,
    validate_args,
)
from midilm.generate.cli import default_model_path  # noqa: E402
from midilm.generate.grammar import GrammarConfig  # noqa: E402
from midilm.generate.sampler import SamplingConfig, sample_music, window_grammar  # noqa: E402
from midilm.generate.steering import SteeringConfig, steering_processor  # noqa: E402

MODEL = default_model_path()
needs_model = pytest.mark.skipif(not MODEL.is_dir(), reason="no default model shipped in this checkout")


def _decode_loop(m, prompt, stop_id: int, max_steps: int, mask):
    """A greedy decoding loop standing in for vLLM's: full logits, `mask(logits, ids, out)`, argmax."""
    ids, out, past = list(prompt), [], None
    step_input = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(max_steps):
            res = m.model(input_ids=step_input, cache=past, use_cache=True)
            past, logits = res.cache, res.logits[:, -1, :].float().clone()
            mask(logits, ids, out)
            tok = int(logits[0].argmax())
            out.append(tok)
            ids.append(tok)
            if tok == stop_id:
                break
            step_input = torch.tensor([[tok]])
    return out


def _engine(m, prompt, args, style: str, max_steps: int, slot: int = 3):
    """The core as each runner drives it: V1 walks the output list, V2 reads the row's position and input id."""
    batch = GrammarBatch()
    assert batch.add(slot, {ARGS_KEY: args})

    def mask(logits, ids, out):
        if style == "v1":
            batch.observe(slot, out)
        else:
            batch.observe_last(slot, len(ids) - 1, ids[-1])
        batch.mask_row(logits, 0, slot)

    return _decode_loop(m, prompt, args["stop_id"], max_steps, mask)


def _melody_controls():
    melody = []
    for k in range(5):
        melody += [k * 80, vocab.DUR_OFFSET + 60, vocab.NOTE_OFFSET + 73 * 128 + 70 + k]  # flute
    return as_controls(melody)


@needs_model
@pytest.mark.parametrize("style", ["v1", "v2"])
def test_processor_masks_reproduce_the_shared_loop_greedy(model, style):
    m = model
    grammar = GrammarConfig.make([0, 33, 128], max_notes_per_onset=3)
    sampling = SamplingConfig(max_new_tokens=150, top_k=1, seed=0)
    prompt = m.prompt_ids("A jazz trio with piano, bass and drums.")
    ref = sample_music(m.model, prompt, m.layout.music_offset, sampling, grammar).tokens[0]
    args = request_args(m.layout.music_offset, m.tokenizer.eos_token_id, len(prompt), sampling, grammar)
    out = _engine(m, prompt, args, style, 200)
    tokens, reason = parse_output(args, out)
    assert tokens == ref and reason == "max tokens"
    # at the budget the grammar is finished and only the stop id is allowed, so the request ends there
    assert out[-1] == m.tokenizer.eos_token_id and len(out) == 151


@needs_model
def test_processor_forces_controls_and_stops_when_the_window_is_full(model):
    m = model
    controls = _melody_controls()
    sampling = SamplingConfig(max_new_tokens=200, top_k=1, seconds=5.0)
    grammar = window_grammar(GrammarConfig.make([0]), sampling.seconds)
    prompt = m.prompt_ids("piano accompaniment")[:-1] + [m.layout.music_offset + vocab.ANTICIPATE]
    context = [0, vocab.DUR_OFFSET + 50, vocab.NOTE_OFFSET + 60]
    full_prompt = prompt + [m.layout.music_offset + t for t in context]
    ref = sample_music(m.model, prompt, m.layout.music_offset, sampling, GrammarConfig.make([0]), context, controls)
    args = request_args(m.layout.music_offset, m.tokenizer.eos_token_id, len(full_prompt), sampling, grammar,
                        context, controls)
    out = _engine(m, full_prompt, args, "v2", 250)
    tokens, reason = parse_output(args, out)
    assert tokens == ref.tokens[0] and reason == ref.stop_reasons[0]
    got = [tokens[i : i + 3] for i in range(0, len(tokens), 3) if tokens[i] >= vocab.CONTROL_OFFSET]
    assert got == [controls[i : i + 3] for i in range(0, len(controls), 3)]
    piece, report = decode_tokens(context + tokens)
    assert report.dropped == 0 and max(t for t in tokens[0::3] if t < vocab.CONTROL_OFFSET) < 500


def _processor_class(monkeypatch):
    """Our processor class built on stand-ins for vLLM 0.33's two base classes (vLLM cannot be installed
    here: it needs its own torch and CUDA). They have the signatures of
    vllm.v1.worker.gpu.sample.logits_processor.LogitsProcessor (Model Runner V2) and
    vllm.v1.sample.logits_processor.LogitsProcessor / MoveDirectionality (the V1 runner)."""
    import abc
    import enum
    import importlib.util
    import sys
    import types

    class V2Base(abc.ABC):
        def __init__(self, vllm_config, req_states):  # noqa: B027 - as in vLLM
            pass

        def add_request(self, req_idx, sampling_params) -> bool:
            return True

        @abc.abstractmethod
        def apply(self, logits, ctx):
            raise NotImplementedError

    class V1Base(abc.ABC):
        @abc.abstractmethod
        def __init__(self, vllm_config, device, is_pin_memory): ...

        @abc.abstractmethod
        def apply(self, logits): ...

        @abc.abstractmethod
        def is_argmax_invariant(self): ...

        @abc.abstractmethod
        def update_state(self, batch_update): ...

    move = enum.Enum("MoveDirectionality", ["UNIDIRECTIONAL", "SWAP"])
    v2 = types.ModuleType("vllm.v1.worker.gpu.sample.logits_processor")
    v2.LogitsProcessor = V2Base
    v1 = types.ModuleType("vllm.v1.sample.logits_processor")
    v1.LogitsProcessor, v1.MoveDirectionality = V1Base, move
    for name in ("vllm", "vllm.v1", "vllm.v1.worker", "vllm.v1.worker.gpu", "vllm.v1.worker.gpu.sample",
                 "vllm.v1.sample"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, v2.__name__, v2)
    monkeypatch.setitem(sys.modules, v1.__name__, v1)
    import midilm.generate.backends.vllm as ours

    spec = importlib.util.spec_from_file_location("midilm_vllm_glue", ours.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls = module.MidiGrammarLogitsProcessor
    assert issubclass(cls, V2Base) and issubclass(cls, V1Base)  # either runner's loader accepts it
    return cls, move


@needs_model
def test_processor_class_drives_both_runner_interfaces(model, monkeypatch):
    from types import SimpleNamespace

    cls, move = _processor_class(monkeypatch)
    m = model
    grammar = GrammarConfig.make([0, 40], max_notes_per_onset=2)
    sampling = SamplingConfig(max_new_tokens=90, top_k=1)
    prompt = m.prompt_ids("A duet for piano and violin.")
    ref = sample_music(m.model, prompt, m.layout.music_offset, sampling, grammar).tokens[0]
    stop = m.tokenizer.eos_token_id
    params = SimpleNamespace(extra_args={ARGS_KEY: request_args(m.layout.music_offset, stop, len(prompt), sampling,
                                                                 grammar)})
    cls.validate_params(params)

    v2 = cls(None, None)
    assert v2.add_request(5, params) and not v2.add_request(6, SimpleNamespace(extra_args=None))

    def v2_mask(logits, ids, out):
        batch = torch.cat([torch.zeros_like(logits), logits])  # row 0 belongs to a request without our settings
        ctx = SimpleNamespace(expanded_idx_mapping=torch.tensor([6, 5]), pos=torch.tensor([3, len(ids) - 1]),
                              input_ids=torch.tensor([0, ids[-1]]))
        batch = v2.apply(batch, ctx)
        assert torch.isfinite(batch[0]).all()
        logits[:] = batch[1:]

    out = _decode_loop(m, prompt, stop, 120, v2_mask)
    assert parse_output(params.extra_args[ARGS_KEY], out)[0] == ref and out[-1] == stop

    v1 = cls(None, "cpu", False)
    live: list[int] = []
    v1.update_state(SimpleNamespace(removed=[], moved=[], added=[(1, params, prompt, live)]))
    v1.update_state(SimpleNamespace(removed=[], added=[], moved=[(1, 0, move.UNIDIRECTIONAL)]))

    def v1_mask(logits, ids, out):
        live[:] = out  # vLLM appends to the request's own list, which the processor holds
        v1.update_state(None)
        logits[:] = v1.apply(logits)

    out = _decode_loop(m, prompt, stop, 120, v1_mask)
    assert parse_output(params.extra_args[ARGS_KEY], out)[0] == ref and out[-1] == stop
    v1.update_state(SimpleNamespace(removed=[0], added=[], moved=[]))
    assert not v1.batch.slots and not v1.outputs


def test_mask_allows_exactly_the_grammar_block_then_only_the_stop_id():
    offset, stop = 100, 7
    sampling = SamplingConfig(max_new_tokens=4)
    args = request_args(offset, stop, 10, sampling, GrammarConfig.make([0], pitch_range=(60, 61)))
    batch = GrammarBatch()
    batch.add(0, {ARGS_KEY: args})
    size = offset + vocab.SEPARATOR + 10
    logits = torch.zeros(2, size)
    batch.mask_row(logits, 1, 0)
    assert torch.isinf(logits[0]).sum() == 0  # other rows untouched
    allowed = torch.isfinite(logits[1]).nonzero().flatten().tolist()
    assert allowed == list(range(offset, offset + 401))  # time 0 .. the 4 s gap cap
    batch.observe(0, [offset + 5, offset + vocab.DUR_OFFSET + 20])
    logits = torch.zeros(1, size)
    batch.mask_row(logits, 0, 0)
    allowed = torch.isfinite(logits[0]).nonzero().flatten().tolist()
    assert allowed == [offset + vocab.NOTE_OFFSET + 60, offset + vocab.NOTE_OFFSET + 61]
    batch.observe(0, [offset + 5, offset + vocab.DUR_OFFSET + 20, offset + vocab.NOTE_OFFSET + 61, offset + 5])
    logits = torch.zeros(1, size)
    batch.mask_row(logits, 0, 0)  # four ids written: the budget is spent
    assert torch.isfinite(logits[0]).nonzero().flatten().tolist() == [stop]


def test_batch_bookkeeping_and_broken_grammar_ends_the_request():
    args = request_args(50, 1, 3, SamplingConfig(), GrammarConfig())
    batch = GrammarBatch()
    assert not batch.add(0, None) and not batch.add(0, {"other": 1})
    assert batch.add(0, {ARGS_KEY: args}) and batch.add(1, {ARGS_KEY: {**args, "stop_id": 2}})
    batch.move(0, 1, swap=True)
    assert batch.slots[0].stop_id == 2 and batch.slots[1].stop_id == 1
    batch.move(0, 4, swap=False)
    assert 0 not in batch.slots and batch.slots[4].stop_id == 2
    batch.remove(4)
    assert set(batch.slots) == {1}
    # a prefill chunk (position before the prompt's end) walks nothing
    batch.observe_last(1, 1, 9)
    assert batch.slots[1].seen == 0
    # an id the grammar forbids (a duration in the time slot) ends the request instead of raising
    batch.observe_last(1, 3, 50 + vocab.DUR_OFFSET + 5)
    assert batch.slots[1].ended and "not allowed" in batch.slots[1].error
    assert batch.allowed(1) == (1, 2, None)


def test_request_args_round_trip_and_validation():
    grammar = GrammarConfig.make([0, 128], max_notes_per_onset=5, pitch_range=(30, 90))
    args = request_args(2048, 1, 40, SamplingConfig(max_new_tokens=33, constrained=False), grammar, [1, 2, 3])

    args = json.loads(json.dumps(args))  # crosses a process boundary as plain data
    validate_args(args)
    from midilm.generate.backends.vllm import _sequence

    seq = _sequence(args)
    assert seq.state.config == grammar and seq.max_new_tokens == 33 and not seq.constrained
    for bad in ({**args, "stop_id": -1}, {**args, "prompt_len": "x"}, "nope",
                {**args, "grammar": {**args["grammar"], "instruments": [300]}}):
        with pytest.raises(ValueError):
            validate_args(bad)


def test_parse_output_drops_the_stop_id_and_partial_events():
    args = request_args(10, 3, 5, SamplingConfig(max_new_tokens=50), GrammarConfig())
    ids = [10 + 0, 10 + vocab.DUR_OFFSET + 10, 10 + vocab.NOTE_OFFSET + 60, 10 + 4, 3]
    tokens, reason = parse_output(args, ids)
    assert tokens == [0, vocab.DUR_OFFSET + 10, vocab.NOTE_OFFSET + 60] and reason == "stopped"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
                    reason="needs vLLM and a CUDA GPU")
@needs_model
def test_real_vllm_generates_valid_constrained_music(tmp_path):
    from midilm.generate.load import load_model
    from midilm.generate.pipeline import GenerateOptions, generate

    m = load_model(MODEL, backend="vllm", gpu_memory_utilization=0.3, enforce_eager=True)
    gens = generate(m, "A calm piano and violin duet at 90 bpm.",
                    GenerateOptions(seed=0, max_tokens=600, seconds=60, n=3))
    assert len(gens) == 3
    for g in gens:
        assert g.report.dropped == 0 and g.settings["backend"] == "vllm" and g.settings["notes"] > 10
        assert set(g.piece.program.tolist()) <= {0, 40}


@needs_model
def test_engine_rows_reach_vllm_as_one_call_with_their_settings(model, monkeypatch):
    """`run_rows` on vLLM: all rows in one `generate` call, each a request with its own seed, prompt and grammar
    settings (context, controls, window end), decoded back into the rows. vLLM itself needs a GPU: a stand-in
    LLM runs each request as greedy decoding masked by our GrammarBatch, as vLLM's loop would with top_k=1."""
    import sys
    from types import SimpleNamespace

    from midilm.generate.engine import Row, run_rows
    from midilm.generate.sampler import MusicSequence

    class SamplingParams(SimpleNamespace):
        pass

    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(SamplingParams=SamplingParams))
    m, calls = model, []
    stop = m.tokenizer.eos_token_id

    class StandInLLM:
        def generate(self, prompts, params, use_tqdm=False):
            calls.append(params)
            outs = []
            for p, sp in zip(prompts, params):
                args = sp.extra_args[ARGS_KEY]
                validate_args(args)
                out = _engine(m, p["prompt_token_ids"], args, "v1", sp.max_tokens)
                outs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=out)]))
            return outs

    StandInLLM.__module__ = "vllm.entrypoints.llm"  # what run_rows recognises a vLLM engine by
    context = [0, vocab.DUR_OFFSET + 40, vocab.NOTE_OFFSET + 48]
    melody = []
    for k in range(4):
        melody += [k * 100, vocab.DUR_OFFSET + 90, vocab.NOTE_OFFSET + 73 * 128 + 72 + k]
    controls = as_controls(melody)
    grammar = GrammarConfig.make([0], max_notes_per_onset=4)
    greedy = SamplingConfig(top_k=1)

    def rows():
        offset = m.layout.music_offset
        return [Row(m.prompt_ids("piano"), MusicSequence(grammar, max_new_tokens=45), greedy, 7),
                Row(m.prompt_ids("a piano accompaniment")[:-1] + [offset + vocab.ANTICIPATE]
                    + [offset + t for t in context], MusicSequence(grammar, True, context, controls, 60, until=350),
                    greedy, 8)]

    ref = rows()
    run_rows(m.model, ref, m.layout.music_offset)
    got = rows()
    run_rows(StandInLLM(), got, m.layout.music_offset, stop_id=stop)
    assert len(calls) == 1 and [sp.seed for sp in calls[0]] == [7, 8]
    assert [r.tokens for r in got] == [r.tokens for r in ref]
    assert [r.seq.reason for r in got] == [r.seq.reason for r in ref]
    assert any(t >= vocab.CONTROL_OFFSET for t in got[1].tokens)
    with pytest.raises(ValueError, match="end-of-text id"):
        run_rows(StandInLLM(), rows(), m.layout.music_offset)


# --- steering: the engine's biases, applied by the vLLM processor -----------------------------------------

STEER = SteeringConfig(key=(2, "major"), key_strength=6.0, bpm=100.0, meter=(3, 4), grid_strength=6.0,
                       gap_strength=8.0, max_gap_beats=0.5, balance_strength=4.0, instruments=(0, 40))


@needs_model
def test_steered_logits_of_the_processor_equal_the_engines_at_every_step(model):
    """The same row, steered, in the engine and in the vLLM processor: at every step (time, duration and note
    slots) the logits the processor leaves for vLLM's sampler equal the ones the engine draws from. The row
    starts mid-piece (context) in a window whose time 0 is at absolute tick 1030, so the grid's origin matters."""
    from midilm.generate.engine import Row, run_rows
    from midilm.generate.sampler import MusicSequence

    m = model
    offset, stop = m.layout.music_offset, m.tokenizer.eos_token_id
    context = [0, vocab.DUR_OFFSET + 40, vocab.NOTE_OFFSET + 48]
    grammar = GrammarConfig.make([0, 40], max_notes_per_onset=3)
    prompt = m.prompt_ids("a cheerful duet for piano and violin") + [offset + t for t in context]
    engine_steps = []

    def spy(row, choice, logits):  # after steering: what the engine draws from
        engine_steps.append((len(row.tokens), choice.lo, logits.copy()))
        return logits

    row = Row(prompt, MusicSequence(grammar, True, context, (), 90), SamplingConfig(top_k=1), 0,
              processors=[steering_processor(STEER), spy], offset=1030)
    run_rows(m.model, [row], offset)
    assert row.seq.reason == "max tokens"

    args = request_args(offset, stop, len(prompt), SamplingConfig(top_k=1), grammar, context, (), 90, None,
                        STEER, 1030)
    args = json.loads(json.dumps(args))  # crosses vLLM's process boundary as plain data
    batch = GrammarBatch()
    assert batch.add(0, {ARGS_KEY: args})
    vllm_steps = []

    def mask(logits, ids, out):
        batch.observe(0, out)
        raw = logits.clone()
        batch.mask_row(logits, 0, 0)
        choice = batch.slots[0].choice()
        if choice is not None and not choice.forced:
            lo, hi = offset + choice.lo, offset + choice.hi
            vllm_steps.append((len(out), choice.lo, logits[0, lo:hi].double().numpy(), raw[0, lo:hi].numpy()))
            assert torch.isinf(logits[0, :lo]).all() and torch.isinf(logits[0, hi:]).all()

    out = _decode_loop(m, prompt, stop, 95, mask)
    assert parse_output(args, out)[0] == row.tokens  # greedy: the same tokens
    assert [s[:2] for s in vllm_steps] == [s[:2] for s in engine_steps] and len(engine_steps) >= 55
    moved = 0.0
    for (_, _, ours, raw), (_, _, theirs) in zip(vllm_steps, engine_steps):
        np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs))
        fin = np.isfinite(theirs)
        # 2e-4: the engine's logits come from the allowed block's output rows only, the processor's from the
        # full output layer (float32 rounding, ~1e-6), and vLLM keeps its logits in float32
        np.testing.assert_allclose(ours[fin], theirs[fin], rtol=0, atol=2e-4)
        moved = max(moved, float(np.max(np.abs(ours[fin] - raw[fin]))))
    assert moved > 1.0  # the steering did move the logits (by nats), so the equality above is not vacuous


@needs_model
def test_steered_generation_on_vllm_equals_the_transformers_backend(model, monkeypatch):
    """`generate` on the vLLM backend (a stand-in LLM runs each request as greedy decoding masked by our
    processor, as vLLM's loop would with top_k=1) writes the same steered piece as on transformers, and the
    sidecar says steering was on; guidance is refused there with a readable error."""
    import dataclasses
    import sys
    from types import SimpleNamespace

    from midilm.generate.pipeline import GenerateOptions, generate

    class SamplingParams(SimpleNamespace):
        pass

    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(SamplingParams=SamplingParams))

    class StandInLLM:
        def generate(self, prompts, params, use_tqdm=False):
            outs = []
            for p, sp in zip(prompts, params):
                assert sp.top_k == 1
                out = _engine(model, p["prompt_token_ids"], sp.extra_args[ARGS_KEY], "v1", sp.max_tokens)
                outs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=out)]))
            return outs

    StandInLLM.__module__ = "vllm.entrypoints.llm"
    on_vllm = dataclasses.replace(model, model=StandInLLM(), backend="vllm")
    prompt = "A cheerful piano piece in D major at 100 bpm."
    opts = GenerateOptions(seed=2, max_tokens=90, seconds=20, top_k=1)
    ref = generate(model, prompt, opts)[0]
    got = generate(on_vllm, prompt, opts)[0]
    alone = generate(model, prompt, dataclasses.replace(opts, steer=False))[0]
    assert ref.tokens != alone.tokens  # steering changes this piece: the vLLM run had to apply it
    assert got.tokens == ref.tokens
    st = got.settings["steering"]
    assert st["active"] and st["note"] == "on" and st["key"] == "D major" and st["grid_strength"] > 0
    with pytest.raises(ValueError, match="classifier-free guidance needs the transformers or llamacpp"):
        generate(on_vllm, prompt, dataclasses.replace(opts, cfg=2.0))


def test_steering_settings_cross_as_plain_data_and_bad_ones_are_refused():
    args = request_args(100, 1, 5, SamplingConfig(), GrammarConfig(), steering=STEER, offset=77)
    args = json.loads(json.dumps(args))
    validate_args(args)
    batch = GrammarBatch()
    batch.add(0, {ARGS_KEY: args})
    slot = batch.slots[0]
    assert slot.steer.config == STEER and slot.offset == 77
    # no biases: no steering state at all
    assert request_args(100, 1, 5, SamplingConfig(), GrammarConfig(), steering=SteeringConfig())["steering"] is None
    cfg = request_args(100, 1, 5, SamplingConfig(), GrammarConfig(), steering=SteeringConfig(cfg_scale=2.0))
    with pytest.raises(ValueError, match="classifier-free guidance"):
        validate_args(cfg)
    for bad in ({**args, "steering": {**args["steering"], "key_strength": -1}},
                {**args, "steering": {**args["steering"], "colour": 1}}, {**args, "steering": [1]},
                {**args, "offset": "x"}):
        with pytest.raises(ValueError):
            validate_args(bad)


def test_vllm_refuses_other_processors_and_guidance_in_one_line():
    from midilm.generate.backends.vllm import run_rows_vllm
    from midilm.generate.engine import Row
    from midilm.generate.sampler import MusicSequence

    def row(**kw):
        return Row([1, 2], MusicSequence(GrammarConfig()), SamplingConfig(), 0, **kw)

    with pytest.raises(ValueError, match="no other logits processors"):
        run_rows_vllm(None, [row(processors=[lambda r, c, x: x])], 100, 1)
    with pytest.raises(ValueError, match="classifier-free guidance"):
        run_rows_vllm(None, [row(uncond_prompt=[1])], 100, 1)
    with pytest.raises(ValueError, match="classifier-free guidance"):
        run_rows_vllm(None, [row(processors=[steering_processor(SteeringConfig(cfg_scale=3.0))])], 100, 1)
