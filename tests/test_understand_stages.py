"""MIDI-LLaMA's three training stages end to end at toy size, in the peft checkpoint convention: each stage's
folder holds only what it trained and names the base LLM and the frozen encoder; the result loads and answers."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tests.conftest import shared_path  # noqa: E402


def test_stages_reference_the_base_and_load_for_answers(tmp_path):
    from midilm.annotate.dataset import build_dataset
    from midilm.annotate.sources import folder
    from midilm.models.encoder import MusicBertConfig, MusicBertModel
    from midilm.music.midi_io import read_midi
    from midilm.train.understand import UnderstandConfig, train_understand
    from midilm.understand import load_understanding_model

    midi = tmp_path / "midi"
    midi.mkdir()
    files = sorted(shared_path("nottingham", "MIDI").glob("reels*.mid"))[:3]
    for p in files:
        (midi / p.name).write_bytes(p.read_bytes())
    build_dataset([folder(midi)], tmp_path / "ds", workers=1, progress=False)
    torch.manual_seed(0)
    MusicBertModel(MusicBertConfig.tiny(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=64, max_notes=64)).save_pretrained(tmp_path / "enc")
    common = dict(data=str(tmp_path / "ds"), steps=2, batch_size=2, logging_steps=1, save_steps=1000, max_len=96,
                  text_vocab=400, hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, text_max_len=64,
                  cache_dir=str(tmp_path / "cache"))
    s0 = train_understand(UnderstandConfig(output=str(tmp_path / "s0"), stage=0, **common))
    s1 = train_understand(UnderstandConfig(output=str(tmp_path / "s1"), stage=1, encoder=str(tmp_path / "enc"),
                                           llm=str(s0), projector="mlp", **common))
    s2 = train_understand(UnderstandConfig(output=str(tmp_path / "s2"), stage=2, init=str(s1), **common))

    for stage in (s1, s2):
        names = {p.name for p in stage.iterdir()}
        assert "llm" not in names and "encoder" not in names  # referenced, not copied
        manifest = json.loads((stage / "midilm.json").read_text())
        assert manifest["base_llm"] == str(s0.resolve()) and manifest["encoder"] == str((tmp_path / "enc").resolve())
        cfg = json.loads((stage / "train_config.json").read_text())
        assert cfg["projector"] == manifest["projector"] == "mlp"  # stage 2 records what it inherited
    assert (s2 / "adapter" / "adapter_model.safetensors").is_file()
    assert sum(f.stat().st_size for f in s2.rglob("*.safetensors")) < sum(f.stat().st_size
                                                                          for f in s0.rglob("*.safetensors"))
    model = load_understanding_model(s2, device="cpu", dtype="fp32")
    answer = model.ask(read_midi(files[0]), "What key is this piece in?", max_new_tokens=8)
    assert isinstance(answer, str)
    # stage 2 again from s2, now reading the pitch-class profile (the projector is widened) and writing fact
    # captions; the encoder's features come from the cache the first runs wrote (none computed again)
    cached = set((tmp_path / "cache").glob("features-*.npy"))
    s3 = train_understand(UnderstandConfig(output=str(tmp_path / "s3"), stage=2, init=str(s2), pitch_classes=True,
                                           pitch_class_gain=8.0,
                                           caption_style="facts", p_caption=0.5, **common))
    assert set((tmp_path / "cache").glob("features-*.npy")) == cached
    manifest = json.loads((s3 / "midilm.json").read_text())
    before = json.loads((s2 / "midilm.json").read_text())
    assert manifest["pitch_classes"] and not before["pitch_classes"]
    assert manifest["encoder_hidden"] == before["encoder_hidden"] + 12
    assert json.loads((s3 / "train_config.json").read_text())["pitch_classes"] is True
    model = load_understanding_model(s3, device="cpu", dtype="fp32")
    assert isinstance(model.describe(read_midi(files[0]), max_new_tokens=8), str)
    # stage 2 once more, now with the key pathway: its classifier is fitted to the rows' key labels before the
    # run, it is saved in the projector file, the model then has one more prefix slot, and answers load and run
    s4 = train_understand(UnderstandConfig(output=str(tmp_path / "s4"), stage=2, init=str(s3), key_pathway=True,
                                           transpose=2, source_boost="folder=3", genre_pathway=True, genre_min_rows=1,
                                           instrument_guide=True, **common))
    fit = json.loads((s4 / "key_fit.json").read_text())
    assert fit["key_fit_rows"] > 0 and 0.0 <= fit["key_fit_accuracy"] <= 1.0
    manifest = json.loads((s4 / "midilm.json").read_text())
    assert manifest["key_pathway"] and manifest["pitch_classes"]
    from safetensors import safe_open

    with safe_open(str(s4 / "projector.safetensors"), "pt") as f:
        assert {"key_pathway.scorer.weight", "key_pathway.embeddings", "genre_pathway.scorer.weight"} <= set(f.keys())
    # the genre pathway (fitted to the rows' genre-and-form phrases) and both guides are on in the saved model
    genre_fit = json.loads((s4 / "genre_fit.json").read_text())
    assert genre_fit["genre_fit_rows"] > 0 and manifest["genre_classes"] == genre_fit["genre_classes"]
    assert manifest["genre_guide"] > 0 and manifest["instrument_guide"] is True
    model = load_understanding_model(s4, device="cpu", dtype="fp32")
    assert model.model.config.slots == 2
    assert isinstance(model.ask(read_midi(files[0]), "Is it major or minor?", max_new_tokens=8), str)
