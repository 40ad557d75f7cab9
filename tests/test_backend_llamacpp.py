"""The llama.cpp backend on the shipped model: same greedy output as transformers, the grammar's guarantees,
n samples sharing one prompt, the pipeline and the CLI. Skips where llama-cpp-python is not installed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from midilm.codecs.amt import vocab  # noqa: E402
from midilm.codecs.amt.decode import decode_tokens  # noqa: E402
from midilm.codecs.amt.lines import as_controls  # noqa: E402
from midilm.generate.backends.llamacpp import LlamaCppDecoder  # noqa: E402
from midilm.generate.cli import default_model_path  # noqa: E402
from midilm.generate.grammar import GrammarConfig  # noqa: E402
from midilm.generate.load import load_model  # noqa: E402
from midilm.generate.sampler import SamplingConfig, sample_music  # noqa: E402
from midilm.models.gguf import export_gguf  # noqa: E402
from midilm.models.midi_llm import load_text_to_midi  # noqa: E402

MODEL = default_model_path()
pytestmark = pytest.mark.skipif(not MODEL.is_dir(), reason="no default model shipped in this checkout")


@pytest.fixture(scope="module")
def hf():
    torch.set_num_threads(1)
    return load_text_to_midi(MODEL)


@pytest.fixture(scope="module")
def f32_path(tmp_path_factory):
    return export_gguf(MODEL, tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf", "f32")


@pytest.fixture(scope="module")
def decoder(f32_path):
    d = LlamaCppDecoder(f32_path)
    yield d
    d.close()


def test_greedy_output_is_identical_to_transformers(hf, decoder):
    prompt = hf.prompt_ids("A cheerful pop song with piano, bass and drums in C major.")
    grammar = GrammarConfig.make([0, 33, 128], max_notes_per_onset=4)
    cfg = SamplingConfig(max_new_tokens=450, top_k=1, n=1, seed=0)
    ref = sample_music(hf.model, prompt, hf.layout.music_offset, cfg, grammar)
    got = sample_music(decoder, prompt, hf.layout.music_offset, cfg, grammar)
    # exact across backends by margin (issue 16): on these greedy paths the top two allowed logits differ by
    # >= 1.7e-3, the two backends' f32 logits by <= 1.2e-5 (148x apart; measured on midilm-t2m-tiny v0, so
    # re-measure for a new model); other kernels (AVX2/AVX-512, threads) move logits by that order, not 1e-3
    assert got.tokens == ref.tokens and len(ref.tokens[0]) == 450
    # n sequences share the prompt's KV cells: each one is still the same greedy sequence
    two = sample_music(decoder, prompt, hf.layout.music_offset, SamplingConfig(max_new_tokens=120, top_k=1, n=2),
                       grammar)
    assert two.tokens == [ref.tokens[0][:120]] * 2


def test_samples_follow_the_grammar_controls_and_seed(hf, decoder):
    melody = []
    for k in range(6):
        melody += [k * 100, vocab.DUR_OFFSET + 90, vocab.NOTE_OFFSET + 73 * 128 + 72 + k]  # flute
    controls = as_controls(melody)
    context = [0, vocab.DUR_OFFSET + 40, vocab.NOTE_OFFSET + 48]
    prompt = hf.prompt_ids("piano")[:-1] + [hf.layout.music_offset + vocab.ANTICIPATE]
    cfg = SamplingConfig(max_new_tokens=240, n=3, seed=5, seconds=6.0)
    a = sample_music(decoder, prompt, hf.layout.music_offset, cfg, GrammarConfig.make([0]), context, controls)
    b = sample_music(decoder, prompt, hf.layout.music_offset, cfg, GrammarConfig.make([0]), context, controls)
    assert a.tokens == b.tokens and len({tuple(t) for t in a.tokens}) > 1  # seeded, and the samples differ
    for toks in a.tokens:
        got = [toks[i : i + 3] for i in range(0, len(toks), 3) if toks[i] >= vocab.CONTROL_OFFSET]
        assert got and got == [controls[i : i + 3] for i in range(0, 3 * len(got), 3)]
        piece, report = decode_tokens(context + toks)
        assert report.dropped == 0 and set(piece.program.tolist()) <= {0, 73}
        assert max(t for t in toks[0::3] if t < vocab.CONTROL_OFFSET) < 600


def test_pipeline_with_sliding_windows_on_llamacpp(f32_path):
    from midilm.generate.pipeline import GenerateOptions, generate

    m = load_model(MODEL, backend="llamacpp", gguf=f32_path)
    assert m.backend == "llamacpp" and m.layout.music_offset == 2048
    gens = generate(m, "A slow piano piece.", GenerateOptions(seed=2, max_tokens=900, seconds=150, n=1))
    g = gens[0]
    assert g.report.dropped == 0 and g.settings["backend"] == "llamacpp" and g.settings["notes"] > 50
    # n samples and other requests share one batch per window; a sample's tokens do not depend on them
    from midilm.generate.pipeline import Request, generate_many

    opts = GenerateOptions(seed=4, max_tokens=60, n=2)
    alone = [x.tokens for x in generate(m, "A jazz trio.", opts)]
    batched = generate_many(m, [Request("an upbeat rock song", GenerateOptions(seed=1, max_tokens=90, seconds=120)),
                                Request("A jazz trio.", opts)])[1]
    assert alone == [x.tokens for x in batched] and alone[0] != alone[1]
    m.model.close()


def test_a_gguf_of_another_model_is_refused(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from midilm.models.tokenizer import train_text_tokenizer

    tok = train_text_tokenizer(["a small text model for a test"] * 4, 300, tmp_path / "text")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "text")
    other = export_gguf(tmp_path / "text", tmp_path / "text.gguf", "f16")  # a plain text model converts too
    d = LlamaCppDecoder(other)
    assert d.n_vocab == len(tok)
    d.close()
    with pytest.raises(ValueError, match="converted from another model"):
        load_model(MODEL, backend="llamacpp", gguf=other)


def test_cli_backend_llamacpp_and_clear_errors(tmp_path, f32_path, capsys):
    from midilm.cli import main

    out = tmp_path / "song.mid"
    r = subprocess.run([sys.executable, "-m", "midilm.cli", "generate", "A calm piano piece at 80 bpm.", "-o",
                        str(out), "--seed", "1", "--max-tokens", "300", "--backend", "llamacpp", "--gguf",
                        str(f32_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    settings = json.loads(out.with_suffix(".json").read_text())
    # the prompt's default length (steering) may end the piece before the token budget
    assert settings["backend"] == "llamacpp" and settings["decode"]["dropped"] == 0 and 0 < settings["tokens"] <= 300
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF not really")
    capsys.readouterr()
    assert main(["generate", "x", "-o", str(tmp_path / "b.mid"), "--backend", "llamacpp", "--gguf", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("midilm: error: llama.cpp could not load") and err.count("\n") == 1
    assert main(["generate", "x", "-o", str(tmp_path / "c.mid"), "--gguf", str(f32_path)]) == 1
    assert "--backend llamacpp" in capsys.readouterr().err
    assert not (tmp_path / "b.mid").exists() and not (tmp_path / "c.mid").exists()


@pytest.fixture(scope="module")
def events_decoder(tmp_path_factory, f32_path):
    from midilm.models.gguf import export_gguf, input_embeddings

    path = export_gguf(MODEL, tmp_path_factory.mktemp("gguf-events") / "tiny-f32-events.gguf", "f32", "events")
    d = LlamaCppDecoder(path, input_rows=lambda: input_embeddings(MODEL), full=lambda: LlamaCppDecoder(f32_path))
    yield d
    d.close()


def test_events_head_scores_only_event_ids_and_matches_transformers(hf, events_decoder):
    d = events_decoder
    assert d.n_vocab == hf.layout.music_offset + vocab.CONTROL_OFFSET and d.full_vocab == hf.model.config.vocab_size
    prompt = hf.prompt_ids("A cheerful pop song with piano, bass and drums in C major.")
    grammar = GrammarConfig.make([0, 33, 128], max_notes_per_onset=4)
    cfg = SamplingConfig(max_new_tokens=450, top_k=1, n=1, seed=0)
    ref = sample_music(hf.model, prompt, hf.layout.music_offset, cfg, grammar)
    # exact by the margin measured for the first test
    assert sample_music(d, prompt, hf.layout.music_offset, cfg, grammar).tokens == ref.tokens
    # forced controls (accompaniment) enter as embedding rows: still the transformers backend's greedy output
    melody = []
    for k in range(6):
        melody += [k * 100, vocab.DUR_OFFSET + 90, vocab.NOTE_OFFSET + 73 * 128 + 72 + k]
    controls, context = as_controls(melody), [0, vocab.DUR_OFFSET + 40, vocab.NOTE_OFFSET + 48]
    prompt = hf.prompt_ids("piano")[:-1] + [hf.layout.music_offset + vocab.ANTICIPATE]
    cfg = SamplingConfig(max_new_tokens=200, top_k=1, n=2, seconds=6.0)
    ref = sample_music(hf.model, prompt, hf.layout.music_offset, cfg, GrammarConfig.make([0]), context, controls)
    got = sample_music(d, prompt, hf.layout.music_offset, cfg, GrammarConfig.make([0]), context, controls)
    assert got.tokens == ref.tokens and any(t >= vocab.CONTROL_OFFSET for t in got.tokens[0])
    with pytest.raises(ValueError, match="scores only ids below"):
        d.logits(0, 0, d.n_vocab + 1)


def test_unconstrained_sampling_moves_to_the_full_head(hf, events_decoder, decoder):
    prompt = hf.prompt_ids("A slow piano piece.")
    cfg = SamplingConfig(max_new_tokens=60, top_k=1, constrained=False)
    got = sample_music(events_decoder, prompt, hf.layout.music_offset, cfg)
    assert got.tokens == sample_music(decoder, prompt, hf.layout.music_offset, cfg).tokens
    assert events_decoder.with_full_vocabulary() is not events_decoder


def test_q8_0_generation_runs_to_a_midi_file(tmp_path):
    # regression: the llama-cpp-python that `setup.sh --all` built with -march=native (GCC 12, a CPU with AMX)
    # died with SIGSEGV on any q8_0 GGUF: GCC 12 drops the stores into the AMX tile config, so llama.cpp's AMX
    # q8_0 matmul loads garbage (general protection fault). A subprocess, so that a crash fails this test only.
    import os

    from midilm.music.midi_io import read_midi

    out = tmp_path / "q8.mid"
    r = subprocess.run([sys.executable, "-m", "midilm.cli", "generate", "A calm piano piece.", "-o", str(out),
                        "--seed", "0", "--max-tokens", "150", "--backend", "llamacpp", "--gguf-type", "q8_0"],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "MIDILM_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, f"exit status {r.returncode}: {r.stderr[-2000:]}"
    converted = [p.name for p in (tmp_path / "cache" / "gguf").glob("*.gguf")]
    assert len(converted) == 1 and converted[0].endswith("-q8_0-events.gguf")  # the default conversion ran
    assert len(read_midi(out)) > 0
