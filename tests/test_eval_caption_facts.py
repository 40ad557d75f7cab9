"""Caption factual precision (`midilm.evaluate.caption_facts`): captions the dataset's own generator writes for
real pieces state only right facts (precision 1.0 by construction, so any parser slip shows), the same captions
made wrong on purpose lose exactly the facts that were changed, and the parser's traps (titles, key changes,
"on the beat", tempo glosses, durations, "piano") are read the way a person reads them."""

from __future__ import annotations

import re

import pytest

from midilm.evaluate.caption_facts import caption_facts, caption_precision, summarise_precision, word_count
from tests.conftest import shared_path

PIECES = (("pop909", "POP909", "010", "010.mid"), ("nottingham", "MIDI", "ashover1.mid"),
          ("freedoom", "musics", "d_e2m1.mid"))


@pytest.fixture(scope="module")
def analysed():
    from midilm.annotate.analyze import analyze_piece
    from midilm.music.midi_io import read_midi

    out = []
    for parts in PIECES:
        path = shared_path(*parts)
        if not path.is_file():
            pytest.skip(f"needs {path}")
        out.append(analyze_piece(read_midi(str(path))))
    return out


def test_generated_captions_of_real_pieces_are_all_right(analysed):
    from midilm.annotate.captions import make_captions

    items = []
    for a in analysed:
        for seed in range(4):
            for caption in make_captions(a, seed, n=3):
                items.append(caption_precision(caption, a))
    s = summarise_precision(items)
    assert s["captions"] == 36
    # the generator states only facts of the dict: every fact the parser finds must be judged right
    wrong = [(f, i) for i in items for f in i["facts"] if not f["correct"]]
    assert s["precision"] == 1.0, wrong[:3]
    assert s["facts_per_caption"] >= 2 and {"key", "tempo", "meter", "instruments"} <= set(s["by_type"])
    assert s["words_mean"] > 10 and 0 < s["share_at_least_25_words"] < 1


def _other_key(key: str) -> str:
    tonic, mode = key.split()
    return ("F# " if tonic != "F#" else "C ") + ("minor" if mode == "major" else "major")


def test_wrong_facts_lower_precision(analysed):
    from midilm.annotate.captions import make_captions
    from midilm.understand.analysis import summary_caption

    a = analysed[0]  # POP909 010: the summary states its key, meter, bpm, instruments, texture and dynamics
    caption = summary_caption(a)
    right = caption_precision(caption, a)
    assert right["precision"] == 1.0
    wrong_meter = "7/8" if a["time_signature"] != "7/8" else "5/4"
    bpm = re.search(r"(\d+) bpm", caption).group(1)
    wrong_bpm = "200" if float(bpm) < 140 else "50"
    bad = (caption.replace(a["key"], _other_key(a["key"])).replace(a["time_signature"], wrong_meter)
           .replace(f"{bpm} bpm", f"{wrong_bpm} bpm"))
    judged = caption_precision(bad, a)
    assert judged["n_facts"] == right["n_facts"]  # same statements, other values
    flagged = {f["type"] for f in judged["facts"] if not f["correct"]}
    assert {"key", "meter", "tempo"} <= flagged
    assert judged["precision"] < right["precision"] - 0.2
    # a caption of one piece judged against another: most facts disagree
    other = make_captions(analysed[2], 0, n=3)[2]
    assert caption_precision(other, a)["precision"] < 0.6


def test_parser_reads_captions_like_a_person():
    facts = caption_facts(
        'A piece titled "Quartet in A major" for violin and cello, in D major. It modulates to A major. '
        "The tempo is Allegro, a fast pace. It lasts 45 seconds and stays on the beat. "
        "It is soft, played on a piano, in 6/8 time at 120 bpm.")
    assert ("key", "D major") in facts and ("key", "A major") not in facts  # not the title, not the key change
    assert [f for f in facts if f[0] == "instruments"] == [("instruments", "violin"), ("instruments", "cello"),
                                                           ("instruments", "piano")]  # "beat" is no drums
    assert [f for f in facts if f[0] == "tempo"] == [("tempo", "Allegro"), ("tempo", "120 bpm")]  # 45 s is no tempo
    assert [f for f in facts if f[0] == "dynamics"] == [("dynamics", "p")]  # "piano" is the instrument
    assert ("meter", "6/8") in facts
    assert ("mode", "minor") in caption_facts("Judging from the minor mode, it is sad.")
    assert caption_facts("Nothing here.") == [] and caption_precision("Nothing here.", {})["precision"] is None
    assert word_count("A jig in 6/8, mezzo-forte.") == 6


def test_instrument_fact_needs_the_piece_to_have_it():
    a = {"instrument_words": ["violin", "viola", "cello"], "key": "G major"}
    judged = caption_precision("A string trio for violin and trumpet in G major.", a)
    assert [(f["stated"], f["correct"]) for f in judged["facts"] if f["type"] == "instruments"] == [
        ("violin", True), ("trumpet", False)]
    assert judged["precision"] == pytest.approx(2 / 3)
