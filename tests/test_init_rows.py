"""Structured initialisation of the AMT rows (models/init_rows.py) and its `expand_vocabulary` scheme."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from midilm.codecs.amt import vocab as V  # noqa: E402
from midilm.models import init_rows as R  # noqa: E402
from midilm.models.vocab import INIT_SCHEMES, MUSIC_ROWS, expand_vocabulary  # noqa: E402

DIM = 64
FIDDLE, VIOLIN, SITAR, PIANO, BASS = 110, 40, 104, 0, 33


def _cos(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


@pytest.fixture(scope="module")
def rows():
    gen = torch.Generator().manual_seed(0)
    text = torch.randn(300, DIM, generator=gen) * 0.5 + 1.0
    return R.structured_rows(text, MUSIC_ROWS, gen, noise=0.0), text


def _centred(rows, lo, hi):
    block = rows[lo:hi]
    return block - block.mean(0)


def note_row(rows, program: int, pitch: int, offset: int = V.NOTE_OFFSET):
    return rows[offset + program * V.MAX_PITCH + pitch]


def test_shape_and_scale_follow_the_text_rows(rows):
    new, text = rows
    assert new.shape == (MUSIC_ROWS, DIM)
    # around the text rows' mean, at a distance of the order of their std (block offset + structure)
    z = (new - text.mean(0)) / text.std(0)
    assert 0.8 < float(z.pow(2).mean().sqrt()) < 3.0


def test_time_and_duration_rows_are_smooth_in_their_value(rows):
    new, _ = rows
    t = _centred(new, V.TIME_OFFSET, V.DUR_OFFSET)
    # 0.50 s is next to 0.51 s and far from 5 s (margins far beyond what the seeded draw could change)
    assert _cos(t[50], t[51]) > 0.9 and _cos(t[50], t[5000]) < 0.5
    d = _centred(new, V.DUR_OFFSET, V.NOTE_OFFSET)
    assert _cos(d[20], d[21]) > 0.9 and _cos(d[20], d[900]) < 0.5
    # the anticipated (control) copies share the value part: same differences between values
    a = _centred(new, V.ATIME_OFFSET, V.ADUR_OFFSET)
    assert torch.allclose(a[50] - a[5000], t[50] - t[5000], atol=1e-4)


def test_note_rows_are_family_plus_pitch(rows):
    new, _ = rows
    n = _centred(new, V.NOTE_OFFSET, V.REST)

    def row(program, pitch):
        return n[program * V.MAX_PITCH + pitch]

    # an instrument starts next to its GM family: fiddle (Ethnic) with sitar, violin (Strings) with viola
    assert _cos(row(FIDDLE, 60), row(SITAR, 60)) > _cos(row(FIDDLE, 60), row(PIANO, 60)) + 0.2
    assert _cos(row(VIOLIN, 60), row(41, 60)) > _cos(row(VIOLIN, 60), row(BASS, 60)) + 0.2
    # within one instrument, neighbouring pitches are closer than distant ones
    assert _cos(row(PIANO, 60), row(PIANO, 61)) > _cos(row(PIANO, 60), row(PIANO, 100)) + 0.2
    # the pitch part is shared: the step from C4 to C6 is the same for every instrument
    assert torch.allclose(row(PIANO, 84) - row(PIANO, 60), row(FIDDLE, 84) - row(FIDDLE, 60), atol=1e-4)


def test_expand_vocabulary_structured_scheme():
    from transformers import LlamaConfig, LlamaForCausalLM

    assert "structured" in INIT_SCHEMES
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=DIM, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    text_rows = model.get_input_embeddings().weight[:300].detach().clone()
    layout = expand_vocabulary(model, 300, init="structured", seed=3)
    w = model.get_input_embeddings().weight.detach()
    assert layout.music_offset == 300 and w.shape == (300 + MUSIC_ROWS, DIM)
    assert torch.equal(w[:300], text_rows)
    music = w[300:]
    assert _cos(music[50] - music[:V.MAX_TIME].mean(0), music[51] - music[:V.MAX_TIME].mean(0)) > 0.9
    # the same seed gives the same rows (a pure function of the seeded generator)
    again = LlamaForCausalLM(config)
    again.get_input_embeddings().weight.data[:300] = text_rows
    expand_vocabulary(again, 300, init="structured", seed=3)
    assert torch.equal(again.get_input_embeddings().weight.detach()[300:], music)
    out = model(input_ids=torch.tensor([[1, 300 + V.AUTOREGRESS, 300 + 10, 300 + V.DUR_OFFSET + 5]]))
    assert out.logits.shape == (1, 4, 300 + MUSIC_ROWS) and torch.isfinite(out.logits).all()
    with pytest.raises(ValueError):
        R.new_rows("unknown", text_rows, MUSIC_ROWS, torch.Generator())


def test_family_fill_copies_the_family_mean_per_pitch():
    offset = 10
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(offset + MUSIC_ROWS, 8, generator=gen)
    before = w.clone()
    trained = [VIOLIN, 41, 42, PIANO, V.DRUMS]  # violin, viola, cello; piano; drums
    filled = R.family_fill(w, offset, trained)
    # every untrained program of a family with trained members: the rest of Strings and Piano; no Ethnic
    assert 43 in filled and 1 in filled and FIDDLE not in filled and VIOLIN not in filled
    want = torch.stack([before[offset + V.NOTE_OFFSET + p * 128 + 60] for p in (40, 41, 42)]).mean(0)
    assert torch.allclose(w[offset + V.NOTE_OFFSET + 43 * 128 + 60], want)
    want_control = torch.stack([before[offset + V.ANOTE_OFFSET + p * 128 + 60] for p in (40, 41, 42)]).mean(0)
    assert torch.allclose(w[offset + V.ANOTE_OFFSET + 43 * 128 + 60], want_control)
    for p in trained + [FIDDLE, SITAR]:
        lo = offset + V.NOTE_OFFSET + p * 128
        assert torch.equal(w[lo:lo + 128], before[lo:lo + 128])
    assert torch.equal(w[: offset + V.NOTE_OFFSET], before[: offset + V.NOTE_OFFSET])
