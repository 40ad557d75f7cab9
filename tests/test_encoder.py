"""MusicBERT encoder: shapes, padding, save/load round trip and pooled piece vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from midilm.codecs import octuple as oc
from midilm.models.encoder import (
    MusicBertConfig,
    MusicBertForMaskedLM,
    MusicBertModel,
    batch_ids,
    chunk_bounds,
    embed_pieces,
    load_encoder,
)
from midilm.music.examples import example_piece


def _micro(**kwargs) -> MusicBertConfig:
    return MusicBertConfig(**{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                              "intermediate_size": 64, "max_notes": 300, **kwargs})


@pytest.fixture(scope="module")
def notes() -> np.ndarray:
    return oc.encode_piece(example_piece())


@pytest.fixture(scope="module")
def model() -> MusicBertForMaskedLM:
    torch.manual_seed(0)
    return MusicBertForMaskedLM(_micro()).eval()


def test_presets_match_musicbert_sizes():
    small, base, tiny = MusicBertConfig.small(), MusicBertConfig.base(), MusicBertConfig.tiny()
    assert (small.hidden_size, small.num_hidden_layers, small.num_attention_heads, small.intermediate_size) == (
        512, 4, 8, 2048)
    assert (base.hidden_size, base.num_hidden_layers, base.num_attention_heads, base.intermediate_size) == (
        768, 12, 12, 3072)
    assert tiny.hidden_size == 256 and tiny.vocab_size == oc.VOCAB_SIZE == 1237
    assert (tiny.pad_token_id, tiny.bos_token_id, tiny.eos_token_id, tiny.mask_token_id) == (
        oc.PAD, oc.BOS, oc.EOS, oc.MASK)
    assert tiny.position_rows == 1000 + 2 + oc.PAD + 1  # fairseq's positions after the padding row
    with pytest.raises(ValueError, match="preset"):
        MusicBertConfig.preset("huge")
    with pytest.raises(ValueError, match="multiple of the"):
        MusicBertConfig(hidden_size=30, num_attention_heads=4)


def test_forward_shapes_and_padding(model, notes):
    ids = batch_ids([notes[:40], notes[:25]])
    assert ids.shape == (2, 8 * 42)
    assert ids[1, 8 * 27 :].eq(oc.PAD).all() and ids[1, 8 * 26 : 8 * 27].eq(oc.EOS).all()
    with torch.no_grad():
        hidden = model.musicbert(ids).last_hidden_state
        alone = model.musicbert(batch_ids([notes[:25]])).last_hidden_state
        logits = model(ids).logits
    assert hidden.shape == (2, 42, 32) and logits.shape == (2, 8 * 42, oc.VOCAB_SIZE)
    # padding changes nothing for the real slots, and an explicit attention mask is the same as the implicit one
    assert torch.allclose(hidden[1, :27], alone[0], atol=1e-5)
    with torch.no_grad():
        masked = model.musicbert(ids, attention_mask=ids.ne(oc.PAD).long()).last_hidden_state
    assert torch.allclose(masked, hidden)
    # a changed note changes the states (attention really mixes slots)
    other = ids.clone()
    other[0, 8 * 5 + 3] += 1  # pitch of note 5
    with torch.no_grad():
        changed = model.musicbert(other).last_hidden_state
    assert not torch.allclose(changed[0, 1], hidden[0, 1])
    with pytest.raises(ValueError, match="8"):
        model(ids[:, :-3])
    with pytest.raises(ValueError, match="exceed"):
        model(batch_ids([np.tile(notes, (2, 1))[:301]]))


def test_labels_give_loss_on_chosen_tokens_only(model, notes):
    ids = batch_ids([notes[:30]])
    labels = torch.full_like(ids, -100)
    labels[0, 16:24] = ids[0, 16:24]
    out = model(ids, labels=labels)
    assert out.logits.shape == (8, oc.VOCAB_SIZE) and out.loss.item() > 0
    with torch.no_grad():
        full = model(ids).logits[0, 16:24]
    assert torch.allclose(full, out.logits, atol=1e-5)
    assert torch.isclose(out.loss, torch.nn.functional.cross_entropy(full, ids[0, 16:24]), atol=1e-5)


def test_save_load_round_trip(tmp_path, model, notes):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    again = MusicBertForMaskedLM.from_pretrained(tmp_path).eval()
    ids = batch_ids([notes[:50], notes[:10]])
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model(ids).logits)
        bare = load_encoder(tmp_path)
        assert isinstance(bare, MusicBertModel) and not bare.training
        assert torch.equal(bare(ids).last_hidden_state, model.musicbert(ids).last_hidden_state)
    from transformers import AutoModel

    assert isinstance(AutoModel.from_pretrained(tmp_path), MusicBertModel)
    with pytest.raises(FileNotFoundError):
        load_encoder(tmp_path / "missing")


def test_chunk_bounds():
    assert chunk_bounds(10, 1) == [(0, 10)]
    assert chunk_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert chunk_bounds(2, 4) == [(0, 1), (0, 1), (1, 2), (1, 2)]


def test_embed_pieces_pooling(model, notes):
    a, b, c = notes[:60], notes[100:117], notes[:5]
    batch = embed_pieces(model, [a, b, c], batch_size=3)
    assert batch.shape == (3, 32) and batch.dtype == np.float32
    for i, item in enumerate((a, b, c)):  # alone equals inside a padded batch
        assert np.allclose(embed_pieces(model, [item])[0], batch[i], atol=1e-5)
    # the mean over notes, excluding <s> and </s>, computed by hand from the hidden states
    with torch.no_grad():
        hidden = model.musicbert(batch_ids([a])).last_hidden_state[0]
    assert np.allclose(batch[0], hidden[1:61].mean(0).numpy(), atol=1e-5)
    chunks = embed_pieces(model, [a, c], k=4)
    assert chunks.shape == (2, 4, 32)
    assert np.allclose(chunks[0, 1], hidden[16:31].mean(0).numpy(), atol=1e-5)  # notes 15..29
    assert np.allclose(chunks[0].mean(0), batch[0], atol=1e-5)  # equal chunks: mean of means is the mean
    # pieces and paths are accepted; max_notes cuts
    assert np.allclose(embed_pieces(model, [example_piece()], max_notes=60)[0], batch[0], atol=1e-5)
    assert embed_pieces(model, [], k=2).shape == (0, 2, 32)
    with pytest.raises(ValueError, match="no notes"):
        embed_pieces(model, [notes[:0]])
    with pytest.raises(ValueError, match="pool"):
        embed_pieces(model, [a], pool="median")
    assert not model.training
