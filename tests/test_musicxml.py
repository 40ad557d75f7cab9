"""midilm.music.musicxml against music21 on real scores (OpenScore quartets from ../shared, the music21 corpus
from the venv), and its handling of ties, chords, voices, transposition and bad input."""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from midilm.music.musicxml import MusicXmlError, program_for_part, read_musicxml
from tests.conftest import shared_path

MOZART_K464 = ("scores/Mozart,_Wolfgang_Amadeus/String_Quartet_No.18_in_A_major,_K.464_(Op._10,_No._5)/"
               "sq7070781.mxl")
SAINT_GEORGES = "scores/Saint-Georges,_Joseph_Bologne/String_Quartet_in_C_major,_Op.1_No.1/sq8437358.mxl"


def corpus_file(corpus_path: str) -> Path:
    common = pytest.importorskip("music21.common")
    return Path(common.getCorpusFilePath()) / corpus_path


def music21_notes(path: Path) -> tuple[Counter, list[tuple[float, float]]]:
    """(onset in 480ths of a quarter, MIDI pitch) of every sounding note music21 reads, ties joined, repeats
    as written; and its tempo marks as (quarter offset, quarter bpm)."""
    converter = pytest.importorskip("music21.converter")
    score = converter.parse(str(path))
    notes: Counter = Counter()
    for part in score.stripTies().parts:
        for n in part.flatten().notes:
            if n.quarterLength > 0:
                for p in n.pitches:
                    notes[(round(float(n.offset) * 480), p.midi)] += 1
    tempos = [(float(start), mark.getQuarterBPM()) for start, _end, mark in score.metronomeMarkBoundaries()]
    return notes, tempos


def ours(piece) -> Counter:
    return Counter(zip(piece.start_tick.tolist(), piece.pitch.tolist()))


@pytest.mark.parametrize("where", ["quartet:" + MOZART_K464, "quartet:" + SAINT_GEORGES, "corpus:bach/bwv66.6.mxl",
                                   "corpus:haydn/opus1no1/movement1.mxl", "corpus:monteverdi/madrigal.3.1.mxl",
                                   "corpus:schumann_clara/polonaise_op1n1.mxl"])
def test_same_notes_and_tempo_as_music21(where):
    kind, rel = where.split(":", 1)
    path = shared_path("openscore-quartets", rel) if kind == "quartet" else corpus_file(rel)
    piece = read_musicxml(path)
    ref, tempos = music21_notes(path)
    assert ours(piece) == ref  # every note, onset and pitch, as music21 reads the score
    # the tempo marks music21 finds, at the same places (the first one at 0 in all of these)
    mine = {int(t): round(float(b), 2) for t, b in zip(piece.tempo_map.ticks, piece.tempo_map.bpm)}
    for start, bpm in tempos:
        assert mine.get(round(start * 480)) == pytest.approx(bpm, abs=0.01)


def test_overfull_measures_are_cut_to_the_bar_as_music21_does():
    # Beethoven op. 18 no. 1/ii overfills bars by odd amounts; measured by the longest voice alone, 156 notes of
    # the later bars land late. The rest are chords whose tie music21 does not join (one note tied of two).
    path = corpus_file("beethoven/opus18no1/movement2.mxl")
    mine, (ref, _) = ours(read_musicxml(path)), music21_notes(path)
    assert sum((mine & ref).values()) >= 0.995 * sum(ref.values())


def test_instruments():
    quartet = read_musicxml(shared_path("openscore-quartets", MOZART_K464))
    assert [t.program for t in quartet.tracks] == [40, 40, 41, 42]
    assert sorted(set(quartet.program.tolist())) == [40, 41, 42]
    # "Violin I" ... "Cello" over a "String Ensemble 1" sound: the part names win
    haydn = read_musicxml(corpus_file("haydn/opus1no1/movement1.mxl"))
    assert [t.program for t in haydn.tracks] == [40, 40, 41, 42]
    # Soprano/Alto/Tenor/Bass under Finale's "Instrument 1" on program 1: a choir
    chorale = read_musicxml(corpus_file("bach/bwv66.6.mxl"))
    assert [t.program for t in chorale.tracks] == [52, 52, 52, 52]
    sonata = read_musicxml(corpus_file("mozart/k545/movement1_exposition.mxl"))
    assert set(sonata.program.tolist()) == {0}
    rag = read_musicxml(corpus_file("joplin/maple_leaf_rag.mxl"))
    assert set(rag.program.tolist()) == {0}


def test_program_for_part_names():
    assert program_for_part("Violino I.", ["ARIA Player"], ["strings.violin"], None) == 40
    assert program_for_part("Bb Clarinet", [], [], 72) == 71
    assert program_for_part("Horn in F", [], [], None) == 60
    assert program_for_part("Bass", [], [], None) == 43  # a double bass beside instruments
    assert program_for_part("Bass", ["Instrument 4"], [], 1, choir=True) == 52  # a voice beside voices
    assert program_for_part("Right Hand", [], [], 1) == 0
    assert program_for_part("", [""], [], 74) == 73  # no name: the MIDI program


def test_signatures_and_velocity_from_a_real_quartet():
    piece = read_musicxml(shared_path("openscore-quartets", MOZART_K464))
    assert [str(ts) for ts in piece.time_signatures] == ["3/4"]
    assert [k.name for k in piece.key_signatures] == ["A major", "E major"]
    assert piece.tempo_map.bpm[0] == pytest.approx(120.0) and 105.0 in piece.tempo_map.bpm.round(2).tolist()
    assert set(piece.velocity.tolist()) == {44, 89}  # its dynamics marks: p and f (music21: 0.35, 0.7 of 127)


SMALL = """<?xml version="1.0" encoding="UTF-8"?>
<score-partwise version="3.1">
  <part-list>
    <score-part id="P1"><part-name>Clarinet in Bb</part-name></score-part>
    <score-part id="P2"><part-name>Piano</part-name>
      <midi-instrument id="P2-I1"><midi-program>1</midi-program></midi-instrument></score-part>
  </part-list>
  <part id="P1">
    <measure number="1">
      <attributes><divisions>2</divisions><key><fifths>2</fifths></key><time><beats>2</beats><beat-type>4</beat-type></time>
        <transpose><diatonic>-1</diatonic><chromatic>-2</chromatic></transpose></attributes>
      <direction><direction-type><metronome><beat-unit>quarter</beat-unit><beat-unit-dot/><per-minute>60</per-minute></metronome></direction-type></direction>
      <note><grace/><pitch><step>E</step><octave>5</octave></pitch></note>
      <note><pitch><step>D</step><octave>5</octave></pitch><duration>2</duration><tie type="start"/></note>
      <note><pitch><step>D</step><octave>5</octave></pitch><duration>2</duration>
        <tie type="stop"/><tie type="start"/></note>
    </measure>
    <measure number="2">
      <note><pitch><step>D</step><octave>5</octave></pitch><duration>1</duration><tie type="stop"/></note>
      <note><cue/><pitch><step>A</step><octave>4</octave></pitch><duration>1</duration></note>
      <note><rest/><duration>2</duration></note>
    </measure>
  </part>
  <part id="P2">
    <measure number="1">
      <attributes><divisions>4</divisions></attributes>
      <direction><direction-type><dynamics><pp/></dynamics></direction-type></direction>
      <note><pitch><step>C</step><octave>4</octave></pitch><duration>8</duration><voice>1</voice></note>
      <note><chord/><pitch><step>E</step><alter>-1</alter><octave>4</octave></pitch><duration>8</duration><voice>1</voice></note>
      <backup><duration>8</duration></backup>
      <forward><duration>4</duration></forward>
      <note><pitch><step>G</step><octave>2</octave></pitch><duration>4</duration><voice>2</voice></note>
    </measure>
    <measure number="2">
      <note><pitch><step>B</step><alter>1</alter><octave>3</octave></pitch><duration>8</duration></note>
    </measure>
  </part>
</score-partwise>
"""


def test_ties_chords_voices_transposition_and_grace_notes():
    piece = read_musicxml(SMALL.encode())
    notes = sorted(zip(piece.start_tick.tolist(), piece.end_tick.tolist(), piece.pitch.tolist(),
                       piece.program.tolist(), piece.velocity.tolist()))
    assert notes == [
        (0, 960, 60, 0, 32), (0, 960, 63, 0, 32),  # a chord, pianissimo
        (0, 1200, 72, 71, 90),  # D5 written, C5 sounding, tied over the bar line; grace and cue notes silent
        (480, 960, 43, 0, 32),  # voice 2 after <backup> and <forward>
        (960, 1920, 60, 0, 32),  # B#3 is C4
    ]
    assert [str(ts) for ts in piece.time_signatures] == ["2/4"] and piece.key_signatures[0].sharps == 2
    assert piece.tempo_map.bpm[0] == pytest.approx(90.0)  # dotted quarter = 60


def test_compressed_mxl_with_container_and_bad_input(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("META-INF/container.xml",
                   '<container><rootfiles><rootfile full-path="inner/score.xml"/></rootfiles></container>')
        z.writestr("inner/score.xml", SMALL)
    (tmp_path / "a.mxl").write_bytes(buf.getvalue())
    piece = read_musicxml(tmp_path / "a.mxl")
    assert len(piece) == 5 and np.all(piece.end_tick > piece.start_tick)

    (tmp_path / "bad.musicxml").write_text("<score-partwise><part-list>")
    with pytest.raises(MusicXmlError, match="bad.musicxml.*not well-formed"):
        read_musicxml(tmp_path / "bad.musicxml")
    with pytest.raises(MusicXmlError, match="score-timewise"):
        read_musicxml(b"<score-timewise><part-list/></score-timewise>")
    with pytest.raises(MusicXmlError, match="no notes"):
        read_musicxml(b"<score-partwise><part-list/><part id='P1'><measure/></part></score-partwise>")
    with pytest.raises(MusicXmlError, match="no MusicXML file"):
        zbuf = io.BytesIO()
        with zipfile.ZipFile(zbuf, "w") as z:
            z.writestr("readme.txt", "nothing")
        read_musicxml(zbuf.getvalue())
    with pytest.raises(MusicXmlError, match="missing.mxl"):
        read_musicxml(tmp_path / "missing.mxl")
