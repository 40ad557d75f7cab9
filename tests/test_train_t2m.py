"""The text-to-MIDI recipe end to end at toy size: real dataset rows, both stages, a loadable model."""

from __future__ import annotations

import json
import random

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("datasets")

from midilm.codecs.amt import vocab as V  # noqa: E402
from midilm.models.vocab import MusicLayout  # noqa: E402
from midilm.train import augment as A  # noqa: E402
from midilm.train.t2m import T2MConfig, block_loss, loss_blocks, train_t2m  # noqa: E402
from tests.conftest import shared_path  # noqa: E402


def test_block_loss_is_cross_entropy_inside_each_block():
    layout = MusicLayout(10)
    blocks = loss_blocks(layout)
    torch.manual_seed(0)
    hidden = torch.randn(1, 4, 8)
    weight = torch.randn(layout.vocab_size, 8)
    labels = torch.tensor([[-100, 3, layout.music_id(120), layout.music_id(V.DUR_OFFSET + 7)]])
    got = block_loss(hidden, weight, labels, blocks)
    expect = 0.0
    for pos, (lo, hi) in ((0, blocks[0]), (1, blocks[1]), (2, blocks[2])):
        logits = hidden[0, pos] @ weight[lo:hi].T
        expect += torch.nn.functional.cross_entropy(logits[None], labels[0, pos + 1 : pos + 2] - lo)
    assert torch.allclose(got, expect / 3)


def test_augmentations_keep_caption_facts_true():
    events = [0, 10050, V.NOTE_OFFSET + 40 * 128 + 76, 0, 10050, V.NOTE_OFFSET + 33 * 128 + 40,
              50, 10050, V.NOTE_OFFSET + 128 * 128 + 36]
    up = A.transpose_events(events, 2)
    assert up[2] == events[2] + 2 and up[5] == events[5] + 2 and up[8] == events[8]  # drums stay
    a = A.transpose_analysis({"key": "Bb major", "chords": [{"start": 0, "end": 1, "label": "F:7"}]}, 2)
    assert a["key"] == "C major" and a["chords"][0]["label"] == "G:7"
    slow = A.scale_tempo(events, 1.25)
    assert slow[6] == round(50 * 1.25)
    from midilm.annotate.rhythm import tempo_word

    b = A.scale_tempo_analysis({"bpm": 150.0, "duration": 60.0}, 1.25)
    assert b["bpm"] == 120.0 and b["tempo_word"] == tempo_word(120.0)
    roles = A.instrument_roles(events)
    assert roles == {40: "melody", 33: "bass"}
    moved, mapping = A.reassign_instruments(events, random.Random(0))
    assert mapping[40] in A.ROLE_POOLS["melody"] and mapping[33] in A.ROLE_POOLS["bass"]
    c = A.reassign_analysis({}, mapping, moved)
    assert set(c["instruments"]) >= {"Drums"}


def test_two_stage_training_gives_a_model_that_generates(tmp_path):
    from midilm.annotate.dataset import build_dataset
    from midilm.annotate.sources import folder
    from midilm.generate.pipeline import GenerateOptions, generate
    from midilm.models.midi_llm import load_text_to_midi

    midi = tmp_path / "midi"
    midi.mkdir()
    for p in sorted(shared_path("nottingham", "MIDI").glob("reels*.mid"))[:6]:
        (midi / p.name).write_bytes(p.read_bytes())
    build_dataset([folder(midi)], tmp_path / "ds", workers=1, progress=False)
    cfg = T2MConfig(data=str(tmp_path / "ds"), output=str(tmp_path / "model"), text_vocab=300, hidden=32, layers=1,
                    heads=2, kv_heads=1, intermediate=64, max_len=256, stage1_steps=3, stage2_steps=3, batch_size=2,
                    logging_steps=1, save_steps=1000)
    out = train_t2m(cfg)
    assert (out / "model.safetensors").exists() and (out / "loss.png").exists()
    history = json.loads((out / "loss_history.json").read_text())
    assert {h["stage"] for h in history if "loss" in h} == {"stage1", "stage2"}
    m = load_text_to_midi(out)
    assert m.layout.music_offset == len(m.tokenizer)
    gens = generate(m, "A lively reel for fiddle at 120 bpm.", GenerateOptions(seed=0, max_tokens=60, n=2))
    for g in gens:
        assert g.report.dropped == 0 and len(g.piece) == len(g.tokens) // 3
        assert set(g.piece.program.tolist()) <= {110}  # "fiddle" named in the prompt is the allow-list
        assert g.settings["bpm"] == 120.0
