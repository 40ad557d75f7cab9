"""MusicBERT fairseq checkpoint conversion: safe loading, key mapping, and the converted model's outputs
against a reference forward pass written here from the raw fairseq tensors."""

from __future__ import annotations

import argparse
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from midilm.cli import main
from midilm.codecs import octuple as oc
from midilm.models.encoder import MusicBertForMaskedLM, batch_ids
from midilm.models.musicbert_convert import InertObject, load_checkpoint
from midilm.music.examples import example_piece

H, LAYERS, HEADS, FFN, POS_ROWS = 32, 2, 4, 48, 8 + 100  # positions as fairseq: pad + 1 + slots


class _ForeignConfig:
    """Stands for omegaconf objects: a class the converter must never need."""

    def __init__(self):
        self.model = {"encoder_attention_heads": HEADS}


def _touch(path: str) -> None:
    open(path, "w").close()


class _Trap:
    """Unpickling this with plain pickle calls `_touch` (or `os.system`); the converter must not."""

    def __init__(self, marker: str, shell: bool = False):
        self.marker, self.shell = marker, shell

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",)) if self.shell else (_touch, (self.marker,))


def _fairseq_state(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.1  # noqa: E731
    se = "encoder.sentence_encoder."
    emb = r(oc.VOCAB_SIZE, H)
    sd = {
        se + "embed_tokens.weight": emb,
        se + "embed_positions.weight": r(POS_ROWS, H),
        se + "downsampling.0.weight": r(H, 8 * H), se + "downsampling.0.bias": r(H),
        se + "upsampling.0.weight": r(8 * H, H), se + "upsampling.0.bias": r(8 * H),
        se + "emb_layer_norm.weight": 1 + r(H), se + "emb_layer_norm.bias": r(H),
        "encoder.lm_head.weight": emb.clone(), "encoder.lm_head.bias": r(oc.VOCAB_SIZE),
        "encoder.lm_head.dense.weight": r(H, H), "encoder.lm_head.dense.bias": r(H),
        "encoder.lm_head.layer_norm.weight": 1 + r(H), "encoder.lm_head.layer_norm.bias": r(H),
        "encoder.sentence_encoder.version": torch.tensor([2.0]),
        "classification_heads.genre.dense.weight": r(4, H),
    }
    for i in range(LAYERS):
        p = f"{se}layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd[p + f"self_attn.{name}.weight"], sd[p + f"self_attn.{name}.bias"] = r(H, H), r(H)
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            sd[p + f"{ln}.weight"], sd[p + f"{ln}.bias"] = 1 + r(H), r(H)
        sd[p + "fc1.weight"], sd[p + "fc1.bias"] = r(FFN, H), r(FFN)
        sd[p + "fc2.weight"], sd[p + "fc2.bias"] = r(H, FFN), r(H)
    return sd


def _reference_logits(sd: dict, tokens: torch.Tensor) -> torch.Tensor:
    """The OctupleEncoder + RoBERTa LM head forward pass from the fairseq tensors (one unpadded sequence)."""
    se = "encoder.sentence_encoder."
    w = lambda name: sd[se + name]  # noqa: E731
    ln = lambda x, name: F.layer_norm(x, (H,), w(name + ".weight"), w(name + ".bias"), 1e-5)  # noqa: E731
    n = tokens.numel() // 8
    x = w("embed_tokens.weight")[tokens].reshape(n, 8 * H) @ w("downsampling.0.weight").T + w("downsampling.0.bias")
    positions = torch.arange(n) + oc.PAD + 1  # fairseq make_positions: padding_idx + 1 onwards
    x = ln(x + w("embed_positions.weight")[positions], "emb_layer_norm")
    d = H // HEADS
    for i in range(LAYERS):
        p = f"layers.{i}."
        proj = lambda t, name: t @ w(p + f"self_attn.{name}.weight").T + w(p + f"self_attn.{name}.bias")  # noqa: E731,B023
        q = proj(x, "q_proj").view(n, HEADS, d).transpose(0, 1) / math.sqrt(d)
        k = proj(x, "k_proj").view(n, HEADS, d).transpose(0, 1)
        v = proj(x, "v_proj").view(n, HEADS, d).transpose(0, 1)
        attn = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v
        x = ln(x + proj(attn.transpose(0, 1).reshape(n, H), "out_proj"), p + "self_attn_layer_norm")
        hidden = F.gelu(x @ w(p + "fc1.weight").T + w(p + "fc1.bias"))
        x = ln(x + hidden @ w(p + "fc2.weight").T + w(p + "fc2.bias"), p + "final_layer_norm")
    t = (x @ w("upsampling.0.weight").T + w("upsampling.0.bias")).reshape(n * 8, H)
    t = F.gelu(t @ sd["encoder.lm_head.dense.weight"].T + sd["encoder.lm_head.dense.bias"])
    t = F.layer_norm(t, (H,), sd["encoder.lm_head.layer_norm.weight"], sd["encoder.lm_head.layer_norm.bias"], 1e-5)
    return t @ sd["encoder.lm_head.weight"].T + sd["encoder.lm_head.bias"]


@pytest.fixture()
def checkpoint(tmp_path):
    sd = _fairseq_state()
    marker = tmp_path / "pwned"
    args = argparse.Namespace(encoder_attention_heads=HEADS, dropout=0.1, attention_dropout=0.1,
                              activation_dropout=0.0, activation_fn="gelu", arch="musicbert_small")
    ckpt = {"args": args, "cfg": _ForeignConfig(), "model": sd, "trap": _Trap(str(marker)),
            "extra_state": {"train_iterator": {"epoch": 3}, "rng": np.arange(4)},
            "optimizer_history": [{"criterion_name": "MaskedLmLoss", "num_updates": 10}]}
    path = tmp_path / "checkpoint_last_musicbert_small.pt"
    torch.save(ckpt, path)
    return path, sd, marker


def test_checkpoint_loads_without_running_foreign_code(checkpoint):
    path, sd, marker = checkpoint
    with pytest.raises(Exception):  # noqa: B017 - the plain weights-only load refuses this file
        torch.load(path, weights_only=True)
    data = load_checkpoint(path)
    assert not marker.exists()  # os.system was never called
    assert isinstance(data["trap"], InertObject) and data["trap"].qualified_name.endswith("_touch")
    assert isinstance(data["args"], InertObject) and data["args"].state["encoder_attention_heads"] == HEADS
    assert torch.equal(data["model"]["encoder.sentence_encoder.embed_tokens.weight"],
                       sd["encoder.sentence_encoder.embed_tokens.weight"])


def test_converted_model_matches_reference_forward(tmp_path, checkpoint):
    path, sd, marker = checkpoint
    out = tmp_path / "converted"
    assert main(["convert", "musicbert", str(path), "-o", str(out)]) == 0
    assert not marker.exists()
    assert (out / "model.safetensors").is_file() and (out / "conversion.json").is_file()
    model = MusicBertForMaskedLM.from_pretrained(out).eval()
    c = model.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (H, LAYERS, HEADS, FFN)
    assert c.position_rows == POS_ROWS and c.dropout == 0.1
    notes = oc.encode_piece(example_piece())
    for window in (notes[:30], notes[50:70]):
        ids = batch_ids([window])
        with torch.no_grad():
            ours = model(ids).logits[0]
        ref = _reference_logits(sd, ids[0])
        assert torch.allclose(ours, ref, atol=1e-4), float((ours - ref).abs().max())


def test_blocked_modules_are_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    torch.save({"model": _fairseq_state(), "trap": _Trap(str(marker), shell=True)}, tmp_path / "shell.pt")
    assert main(["convert", "musicbert", str(tmp_path / "shell.pt"), "-o", str(tmp_path / "out")]) == 1
    assert "cannot read the checkpoint safely" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_bad_checkpoints_fail_clearly(tmp_path, capsys):
    sd = _fairseq_state()
    sd["encoder.lm_head.weight"] = sd["encoder.lm_head.weight"] + 1  # untied head
    torch.save({"model": sd}, tmp_path / "untied.pt")
    assert main(["convert", "musicbert", str(tmp_path / "untied.pt"), "-o", str(tmp_path / "o1")]) == 1
    assert "not tied" in capsys.readouterr().err
    sd = _fairseq_state()
    sd["encoder.sentence_encoder.layers.1.fc1.weight"] = torch.zeros(FFN + 1, H)
    torch.save({"model": sd}, tmp_path / "shape.pt")
    assert main(["convert", "musicbert", str(tmp_path / "shape.pt"), "-o", str(tmp_path / "o2")]) == 1
    assert "shape" in capsys.readouterr().err
    torch.save({"model": {"encoder.something_else.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    assert main(["convert", "musicbert", str(tmp_path / "other.pt"), "-o", str(tmp_path / "o3")]) == 1
    assert "unexpected keys" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["convert", "musicbert", str(tmp_path / "junk.pt"), "-o", str(tmp_path / "o4")]) == 1
    assert "midilm: error:" in capsys.readouterr().err
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))
