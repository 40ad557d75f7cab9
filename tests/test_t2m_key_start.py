"""Key-start rows of the text-to-MIDI recipe: short examples whose caption names the (transposed) key and whose
music is the piece's first notes, and the row-by-row mix that carries them beside the ordinary rows."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from midilm.annotate.captions import spelled_key  # noqa: E402
from midilm.codecs.amt import vocab as V  # noqa: E402
from midilm.models.vocab import MusicLayout  # noqa: E402
from midilm.train.augment import shift_key  # noqa: E402
from midilm.train.packing import MixedStream, PackedStream, SkipExample  # noqa: E402
from midilm.train.t2m import T2MConfig, key_start_example, stage2_example, stage2_stream  # noqa: E402
from tests.test_train_t2m import _example_piece, _tiny_tokenizer  # noqa: E402


def _pitches(events):
    notes = [t - V.NOTE_OFFSET for t in events[2::3]]
    return [n % 128 for n in notes if n // 128 != V.DRUMS]


def test_a_key_start_example_names_its_transposed_key_and_holds_the_first_notes():
    tok = _tiny_tokenizer()
    layout = MusicLayout(len(tok))
    flag = layout.music_id(V.AUTOREGRESS)
    piece = _example_piece({"key": "D major", "bpm": 120.0, "instruments": ["piano"]})
    cfg = T2MConfig(data="", output="", max_len=1024, key_start_len=12, p_tempo=0.0)
    first = _pitches(piece.events[:12])
    shifts = Counter()
    rng = random.Random(0)
    for _ in range(40):
        ids, labels = key_start_example([piece], layout, tok, cfg, rng)
        k = ids.index(flag)
        assert all(y == -100 for y in labels[: k + 1]) and labels[k + 1 :] == ids[k + 1 :]
        music = [t - layout.music_offset for t in ids[k + 1 :]]
        assert len(music) == 12  # four whole events, the piece's first
        shift = _pitches(music)[0] - first[0]
        assert _pitches(music) == [p + shift for p in first]  # transposed as a whole, not a later window
        assert -5 <= shift <= 6
        key = shift_key("D major", shift)
        caption = tok.decode(ids[:k], skip_special_tokens=True)
        assert key in caption or spelled_key(key) in caption  # the caption names the key the notes are in
        shifts[shift] += 1
    assert len(shifts) >= 6  # many keys, so the key's name is what tells them apart


def test_unnamed_key_start_examples_keep_the_piece_in_its_own_key_and_name_no_key():
    tok = _tiny_tokenizer()
    layout = MusicLayout(len(tok))
    flag = layout.music_id(V.AUTOREGRESS)
    # facts besides the key, so that the caption writer has captions that leave the key out
    piece = _example_piece({"key": "D major", "bpm": 120.0, "instruments": ["piano"], "genre": "folk",
                            "tune_type": "reel", "time_signature": "4/4"})
    first = _pitches(piece.events[:12])
    cfg = T2MConfig(data="", output="", max_len=1024, key_start_len=12, p_tempo=0.0, key_start_unnamed=0.5)
    rng = random.Random(0)
    named = unnamed = 0
    for _ in range(60):
        ids, _ = key_start_example([piece], layout, tok, cfg, rng)
        k = ids.index(flag)
        caption = tok.decode(ids[:k], skip_special_tokens=True)
        pitches = _pitches([t - layout.music_offset for t in ids[k + 1 :]])
        if "major" in caption or "minor" in caption:
            named += 1
            key = shift_key("D major", pitches[0] - first[0])
            assert key in caption or spelled_key(key) in caption
        else:
            unnamed += 1
            assert pitches == first  # no key named, so no transposition: the data's own key is the answer
    assert 15 <= unnamed <= 45 and named + unnamed == 60
    # off (the default), no draw is spent on the choice: the examples are the ones the recipe always made
    a, b = random.Random(3), random.Random(3)
    off = T2MConfig(data="", output="", max_len=1024, key_start_len=12, p_tempo=0.0)
    explicit = T2MConfig(data="", output="", max_len=1024, key_start_len=12, p_tempo=0.0, key_start_unnamed=0.0)
    assert [key_start_example([piece], layout, tok, off, a) for _ in range(5)] == \
        [key_start_example([piece], layout, tok, explicit, b) for _ in range(5)]


def test_key_start_examples_need_a_key():
    tok = _tiny_tokenizer()
    layout = MusicLayout(len(tok))
    cfg = T2MConfig(data="", output="", max_len=1024, p_key_start=0.5)
    with pytest.raises(SkipExample):
        key_start_example([_example_piece({"bpm": 120.0})], layout, tok, cfg, random.Random(0))
    with pytest.raises(ValueError, match="key"):
        stage2_stream([_example_piece({"bpm": 120.0})], layout, tok, cfg, 0)


def _rows(stream, n):
    return [{k: v.tolist() for k, v in row.items()} for row in itertools.islice(iter(stream), n)]


def test_the_stage2_stream_is_unchanged_without_key_start_rows_and_mixes_them_by_row_when_asked():
    tok = _tiny_tokenizer()
    layout = MusicLayout(len(tok))
    pieces = [_example_piece({"key": "D major", "bpm": 120.0}, captions=("A reel.",))]
    off = T2MConfig(data="", output="", max_len=400)
    plain = PackedStream(stage2_example(pieces, layout, tok, off), 400, 0, off.seed + 1)
    assert _rows(stage2_stream(pieces, layout, tok, off, 0), 12) == _rows(plain, 12)

    on = T2MConfig(data="", output="", max_len=400, p_key_start=0.5, key_start_len=12)
    rows = _rows(stage2_stream(pieces, layout, tok, on, 0), 200)
    # an ordinary row holds one long example here; a key-start row packs several short ones
    several = sum(_examples_in(r) > 1 for r in rows)
    assert 0.35 < several / len(rows) < 0.65  # binomial(200, 0.5): outside with probability under 1e-4


def _examples_in(row) -> int:
    """Examples in a packed row: their positions restart at 0 (padding after the last target restarts too)."""
    end = max(i for i, y in enumerate(row["labels"]) if y != -100) + 1
    return sum(p == 0 for p in row["position_ids"][:end])


def test_mixed_stream_draws_rows_by_weight_and_sums_the_skips():
    def maker(value):
        def make(r: random.Random):
            if r.random() < 0.1:
                raise SkipExample(f"skip {value}")
            return [value] * 4, [value] * 4

        return make

    a, b = PackedStream(maker(1), 4, 0, 0), PackedStream(maker(2), 4, 0, 1)
    mixed = MixedStream([(a, 0.8), (b, 0.2)], seed=3)
    firsts = Counter(row["input_ids"][0].item() for row in itertools.islice(iter(mixed), 500))
    assert 0.72 < firsts[1] / 500 < 0.88  # binomial(500, 0.8): outside with probability under 1e-4
    assert set(mixed.skipped) == {"skip 1", "skip 2"}
    assert sum(mixed.skipped.values()) == sum(a.skipped.values()) + sum(b.skipped.values())
    for bad in ([], [(a, -1.0), (b, 2.0)], [(a, 0.0)]):
        with pytest.raises(ValueError):
            MixedStream(bad, seed=0)
