"""Self-distillation of the steering into the text-to-MIDI model: the distilled rows' training examples, the mix
with real pieces, and scripts/t2m_distill.py's filters on real generated and real reference MIDI."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from midilm.codecs.amt import vocab as V  # noqa: E402
from midilm.models.vocab import MusicLayout  # noqa: E402
from midilm.train.t2m import (  # noqa: E402
    Distilled,
    T2MConfig,
    distilled_example,
    load_distilled,
    stage2_example,
)
from tests.test_train_t2m import _example_piece, _tiny_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _events():
    return _example_piece().events


def test_distilled_example_masks_the_prompt_and_keeps_the_music_from_its_start():
    tok = _tiny_tokenizer()
    layout = MusicLayout(len(tok))
    flag = layout.music_id(V.AUTOREGRESS)
    events = _events()
    row = Distilled("A lively reel for fiddle in D major at 120 bpm.", events)
    cfg = T2MConfig(data="", output="", max_len=400)
    ids, labels = distilled_example(row, layout, tok, cfg)
    k = ids.index(flag)
    assert ids[:k] == tok(layout.prompt_text(row.caption), add_special_tokens=True)["input_ids"]
    assert all(y == -100 for y in labels[: k + 1])
    music = [t - layout.music_offset for t in ids[k + 1 :]]
    assert len(events) > 400 and len(music) == (400 - k - 1) // 3 * 3  # as much as fits, whole events
    assert music == events[: len(music)]  # from the start, where the key is set, never a later window
    assert labels[k + 1 :] == ids[k + 1 :]


def test_the_mix_draws_distilled_rows_at_their_share_and_nothing_changes_when_off():
    tok = _tiny_tokenizer()
    layout = MusicLayout(len(tok))
    pieces = [_example_piece(captions=("A reel.",))]
    distilled = [Distilled("A waltz in F major.", _events()[:60])]
    plain = dict(data="", output="", max_len=300)

    def draws(cfg, rows, n=200):
        fn, rng = stage2_example(pieces, layout, tok, cfg, rows), random.Random(1)
        return [fn(rng) for _ in range(n)]

    marker = tok(layout.prompt_text("A waltz in F major."), add_special_tokens=True)["input_ids"]
    half = draws(T2MConfig(**plain, p_distill=0.5), distilled)
    share = sum(ids[: len(marker)] == marker for ids, _ in half) / len(half)
    assert 0.35 < share < 0.65  # binomial(200, 0.5): outside this with probability under 1e-4
    # off (no rows, or a zero share): exactly the real-piece stream, draw for draw
    base = draws(T2MConfig(**plain), None, 20)
    assert draws(T2MConfig(**plain, p_distill=0.5), None, 20) == base
    assert draws(T2MConfig(**plain), distilled, 20) == base


def test_load_distilled_refuses_rows_without_whole_events(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"caption": "A reel in D major.", "events": [0, 1030, 11060]}) + "\n\n")
    assert load_distilled(good) == [Distilled("A reel in D major.", [0, 1030, 11060])]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"caption": "A reel.", "events": [0, 1030]}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_distilled(bad)


def _script():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import t2m_distill
    finally:
        sys.path.pop(0)
    return t2m_distill


def test_melody_filter_rejects_a_top_voice_stuck_on_one_pitch_and_keeps_a_moving_one():
    import numpy as np

    d = _script()
    tune = np.array([62, 64, 66, 67, 69, 67, 66, 64, 62, 66, 69, 74])
    assert d.melody_faults(tune, d.MAX_REPEAT, d.MAX_TOP_PITCH) is None
    stuck = np.array([79, 79, 79, 76, 79, 79, 79, 74, 79, 79, 79, 72])
    assert d.melody_faults(stuck, d.MAX_REPEAT, d.MAX_TOP_PITCH) == "top voice repeats its pitch"
    pedal = np.array([79, 72, 79, 74, 79, 76, 79, 72, 79, 74, 79, 76])  # never twice in a row, yet always back
    assert d.melody_faults(pedal, d.MAX_REPEAT, d.MAX_TOP_PITCH) == "top voice sits on one pitch"
    assert d.melody_faults(tune[:5], d.MAX_REPEAT, d.MAX_TOP_PITCH) is not None


def test_select_keeps_an_output_in_the_captions_key_and_rejects_one_in_another(tmp_path):
    from midilm.codecs.amt.encode import encode_midi
    from midilm.evaluate.generation import measure
    from midilm.music.examples import example_piece
    from midilm.music.midi_io import midi_bytes, read_midi

    gen = tmp_path / "gen"
    gen.mkdir()
    (gen / "a.mid").write_bytes(midi_bytes(example_piece()))
    (gen / "b.mid").write_bytes(midi_bytes(example_piece()))
    key = measure(read_midi(gen / "a.mid"))["key"]
    other = "F# major" if key != "F# major" else "C major"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(x) + "\n" for x in (
        {"id": "a", "prompt": f"A tune in {key}.", "key": key},
        {"id": "b", "prompt": f"A tune in {other}.", "key": other},
        {"id": "c", "prompt": "A tune.", "key": None},  # no output written
    )))
    out = tmp_path / "kept.jsonl"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "t2m_distill.py"), "select", str(prompts), str(gen),
                          str(out), "--max-repeat", "1", "--max-top-pitch", "1", "--min-in-scale", "0"],
                         capture_output=True, text=True, check=True)
    assert "kept 1" in run.stdout and "not in the caption's key 1" in run.stdout and "no output 1" in run.stdout
    rows = load_distilled(out)
    assert [r.caption for r in rows] == [f"A tune in {key}."]
    assert rows[0].events == encode_midi(gen / "a.mid")


def _tiny_packed(tmp_path, keys=("D major", "A minor", "Bb major")):
    """A packed dataset (the layout `pack_for_training` writes) of the example piece under three keys."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    events = _events()
    rows = [{"unit": "piece", "split": "train", "path": f"p{i}.mid", "source": "example", "key": key, "bpm": 120.0,
             "events": events} for i, key in enumerate(keys)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    (tmp_path / "summary.json").write_text(json.dumps({"json_columns": []}))
    return tmp_path


def test_prompts_record_their_piece_and_shift_and_transpose_moves_kept_rows_to_named_keys(tmp_path):
    from midilm.generate.steering import key_in_text
    from midilm.train.augment import shift_key, transpose_events
    from midilm.train.t2m import load_pieces

    d = _script()
    data = _tiny_packed(tmp_path)
    items = d.make_prompts(str(data), keyed=6, free=0, seed=0)
    pieces = [p for p in load_pieces(str(data), "train") if p.analysis.get("key")]
    for item in items:
        assert shift_key(pieces[item["piece"]].analysis["key"], item["shift"]) == item["piece_key"] == item["key"]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(i) + "\n" for i in items))
    kept = tmp_path / "kept.jsonl"
    music = _events()[:90]
    kept.write_text(json.dumps({"id": items[0]["id"], "caption": items[0]["prompt"], "events": music,
                                "named_key": True}) + "\n")
    rows = d.transposed_rows(str(data), prompts, kept, per_row=4, seed=0)
    assert len(rows) == 4 and len({r["key"] for r in rows}) == 4
    for r in rows:
        t = int(r["id"].removeprefix(items[0]["id"]))
        assert t != 0 and -5 <= items[0]["shift"] + t <= 6  # within the SFT's range from the original piece
        assert r["key"] == shift_key(items[0]["key"], t)
        assert key_in_text(r["caption"]) == key_in_text(r["key"])  # the caption names the key the notes moved to
        assert r["events"] == transpose_events(music, t)
    (tmp_path / "old.jsonl").write_text(json.dumps({k: v for k, v in items[0].items() if k not in ("piece", "shift")}))
    with pytest.raises(SystemExit, match="remake"):
        d.transposed_rows(str(data), tmp_path / "old.jsonl", kept, per_row=4, seed=0)
