"""The classical sources of the dataset builder: the music21 corpus's composer collections and the OpenScore
quartets, their metadata, splits and conversion without music21's MIDI writer."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from midilm.annotate import sources as S
from midilm.music.midi_io import read_midi
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def classical():
    pytest.importorskip("music21")
    return list(S.music21_corpus("classical"))


def test_music21_classical_collections_metadata_and_split(classical):
    by_path = {it.metadata["corpus_path"]: it for it in classical}
    tops = Counter(it.metadata["collection"] for it in classical)
    assert {"bach", "beethoven", "haydn", "mozart", "schumann_robert", "chopin", "handel", "palestrina"} <= set(tops)
    assert not tops.keys() & {"essenFolksong", "ryansMammoth", "demos", "theoryExercises", "leadSheet"}
    assert tops["bach"] > 400
    # analyses are no pieces; a Humdrum file beside the MusicXML of the same movement is the same work
    assert not any(p.endswith(".rntxt") for p in by_path)
    assert "beethoven/opus18no1/movement1.mxl" in by_path and "beethoven/opus18no1/movement1.krn" not in by_path
    assert "chopin/mazurka06-2.krn" in by_path  # no MusicXML of it
    chorale = by_path["bach/bwv66.6.mxl"].metadata
    assert (chorale["genre"], chorale["tune_type"], chorale["composer"], chorale["era"], chorale["nationality"]) == (
        "classical", "chorale", "Johann Sebastian Bach", "Baroque", "German")
    assert by_path["bach/bwv846.mxl"].metadata["tune_type"] == "prelude"
    assert by_path["mozart/k545/movement1_exposition.mxl"].metadata["tune_type"] == "piano sonata"
    assert by_path["mozart/k80/movement1.mxl"].metadata["tune_type"] == "string quartet"
    assert by_path["joplin/maple_leaf_rag.mxl"].metadata["genre"] == "ragtime"
    for it in classical:
        assert it.split == S.music21_split(it.metadata["corpus_path"])  # the data README's held-out rule


def test_music21_works_convert_without_music21s_midi_writer(classical, tmp_path):
    items = {it.metadata["corpus_path"]: it for it in S.music21_corpus("bach,chopin,mozart", cache_dir=tmp_path)}
    chorale = read_midi(S.ensure_midi(items["bach/bwv66.6.mxl"]))
    assert len(chorale) == 163 and {t.program for t in chorale.tracks} == {52}  # four voices, ties joined
    assert chorale.bpm == pytest.approx(96.0) and str(chorale.time_signature) == "4/4"
    # Humdrum goes through music21's parser and our writer
    mazurka = read_midi(S.ensure_midi(items["chopin/mazurka06-2.krn"]))
    assert len(mazurka) > 700 and set(mazurka.program.tolist()) == {0}
    sonata = read_midi(S.ensure_midi(items["mozart/k545/movement1_exposition.mxl"]))
    assert len(sonata) == 191 and set(sonata.program.tolist()) == {0}


def test_quartets_all_convert_with_composer_facts(tmp_path):
    root = shared_path("openscore-quartets")
    items = list(S.openscore_quartets(root, cache_dir=tmp_path))
    assert all(it.metadata["era"] and it.metadata["nationality"] for it in items)  # every composer known
    mozart = next(it for it in items if "Mozart" in it.path).metadata
    assert (mozart["era"], mozart["nationality"], mozart["birth"]) == ("Classical", "Austrian", 1756)
    # Saint-Georges' scores failed with music21 ("badly formed repeats"); they play once as written
    georges = [it for it in items if "Saint-Georges" in it.path]
    assert len(georges) == 6
    piece = read_midi(S.ensure_midi(georges[0], timeout=60))
    assert [t.program for t in piece.tracks] == [40, 40, 41, 42] and len(piece) > 1000
    assert Path(georges[0].path).is_relative_to(tmp_path)
