"""Constrained sampling with a real (tiny, randomly initialised) Llama in MIDI-LLM's released layout."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import numpy as np  # noqa: E402

from midilm.codecs.amt import vocab  # noqa: E402
from midilm.codecs.amt.decode import decode_tokens  # noqa: E402
from midilm.codecs.amt.lines import as_controls  # noqa: E402
from midilm.generate.grammar import GrammarConfig  # noqa: E402
from midilm.generate.sampler import SamplingConfig, filter_logits, music_seconds, sample_music  # noqa: E402
from midilm.models.midi_llm import load_text_to_midi  # noqa: E402
from midilm.models.tokenizer import train_text_tokenizer  # noqa: E402
from midilm.models.vocab import MIDI_LLM_PROMPT, MusicLayout  # noqa: E402


@pytest.fixture(scope="module")
def midi_llm_layout_model(tmp_path_factory):
    """A 1-layer, 16-wide Llama with MIDI-LLM's vocabulary (183,286 = 128,256 text + 55,030 music)."""
    out = tmp_path_factory.mktemp("tiny-midi-llm")
    train_text_tokenizer([MIDI_LLM_PROMPT + "a calm piano piece with strings"] * 4, 300, out)
    cfg = transformers.LlamaConfig(vocab_size=183286, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(out)
    MusicLayout(128256).save(out)  # the tokenizer here is tiny: only a manifest can place the music ids
    return load_text_to_midi(out)


def test_layout_and_exact_prompt(midi_llm_layout_model):
    m = midi_llm_layout_model
    assert m.layout.music_offset == 128256 and m.layout.vocab_size == 183286
    ids = m.prompt_ids("A jazzy tune.")
    assert ids[0] == m.tokenizer.bos_token_id and ids[-1] == 128256 + vocab.AUTOREGRESS
    text = m.tokenizer.decode(ids[1:-1])
    assert text == MIDI_LLM_PROMPT + "A jazzy tune. "


def test_constrained_samples_decode_and_follow_the_allow_list(midi_llm_layout_model):
    m = midi_llm_layout_model
    grammar = GrammarConfig.make([0, 40, 128], max_notes_per_onset=4)
    r = sample_music(m.model, m.prompt_ids("strings"), m.layout.music_offset,
                     SamplingConfig(max_new_tokens=150, n=3, seed=7, temperature=0.5), grammar)
    assert len(r.tokens) == 3
    for toks in r.tokens:
        assert toks and len(toks) % 3 == 0 and len(toks) <= 150
        piece, report = decode_tokens(toks)
        assert report.dropped == 0 and len(piece) == len(toks) // 3
        assert set(piece.program.tolist()) <= {0, 40, 128}


def test_seed_reproduces_and_seconds_limit(midi_llm_layout_model):
    m = midi_llm_layout_model
    cfg = SamplingConfig(max_new_tokens=90, n=2, seed=3, seconds=4.0)
    a = sample_music(m.model, m.prompt_ids("x"), m.layout.music_offset, cfg)
    b = sample_music(m.model, m.prompt_ids("x"), m.layout.music_offset, cfg)
    assert a.tokens == b.tokens
    for toks in a.tokens:
        assert max(toks[0::3], default=0) < 400


def test_unconstrained_sampling_breaks_the_grammar_and_constrained_does_not(midi_llm_layout_model):
    m = midi_llm_layout_model
    free = sample_music(m.model, m.prompt_ids("x"), m.layout.music_offset,
                        SamplingConfig(max_new_tokens=60, n=4, seed=0, constrained=False))
    # MIDI-LLM's allow-list alone: music ids in any order, which the decoder has to repair
    assert all(len(t) == 60 for t in free.tokens)
    assert sum(decode_tokens(t)[1].dropped for t in free.tokens) > 0
    held = sample_music(m.model, m.prompt_ids("x"), m.layout.music_offset,
                        SamplingConfig(max_new_tokens=60, n=4, seed=0))
    assert sum(decode_tokens(t)[1].dropped for t in held.tokens) == 0


def test_accompaniment_controls_are_forced_and_folded_back(midi_llm_layout_model):
    m = midi_llm_layout_model
    melody = []
    for k in range(6):
        melody += [k * 100, vocab.DUR_OFFSET + 90, vocab.NOTE_OFFSET + 73 * 128 + 72 + k]  # flute
    controls = as_controls(melody)
    r = sample_music(m.model, m.prompt_ids("x")[:-1] + [m.layout.music_offset + vocab.ANTICIPATE],
                     m.layout.music_offset, SamplingConfig(max_new_tokens=240, seed=1, seconds=6.0),
                     GrammarConfig.make([0]), controls=controls)
    toks = r.tokens[0]
    got = [toks[i : i + 3] for i in range(0, len(toks), 3) if toks[i] >= vocab.CONTROL_OFFSET]
    assert got and got == [controls[i : i + 3] for i in range(0, 3 * len(got), 3)]
    piece, report = decode_tokens(toks)
    assert 73 in piece.program.tolist() and report.dropped == 0
    assert music_seconds(toks) > 0


def test_top_p_keeps_the_best_token():
    logits = np.array([5.0, 1.0, 0.5, -1.0])
    out = filter_logits(logits, 1.0, 0, 0.01)
    assert np.isfinite(out).sum() == 1 and np.isfinite(out[0])
    out = filter_logits(logits, 1.0, 2, 1.0)
    assert np.isfinite(out).sum() == 2


def _nucleus_by_full_sort(x: np.ndarray, top_p: float) -> np.ndarray:
    """The textbook nucleus: sort everything, keep while the mass before a token is under top_p."""
    p = np.exp(x - x.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    before = np.cumsum(p[order]) - p[order]
    keep = np.zeros(x.size, dtype=bool)
    keep[order[before < top_p]] = True
    return keep


@pytest.mark.parametrize("seed", range(20))
def test_fast_nucleus_equals_the_full_sort(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 20000))
    x = rng.normal(0, float(rng.uniform(0.1, 8)), size)  # from nearly flat to very peaked
    top_p = float(rng.choice([0.5, 0.9, 0.98, 0.999]))
    assert np.array_equal(np.isfinite(filter_logits(x, 1.0, 0, top_p)), _nucleus_by_full_sort(x, top_p))


def test_draw_follows_the_distribution():
    from midilm.generate.sampler import draw

    rng = np.random.default_rng(0)
    logits = np.log(np.array([0.5, 0.3, 0.2, 1e-9]))
    counts = np.bincount([draw(logits, 10, SamplingConfig(top_p=1.0), rng) - 10 for _ in range(4000)],
                         minlength=4)
    assert np.allclose(counts / 4000, [0.5, 0.3, 0.2, 0.0], atol=0.03)
