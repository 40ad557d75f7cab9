"""OctupleMIDI: MusicBERT's field sizes and rules, and round trips on real files."""

from __future__ import annotations

import numpy as np
import pytest

from midilm.codecs import octuple as oc
from midilm.music.examples import example_piece
from midilm.music.midi_io import read_midi
from tests.conftest import shared_path


def test_vocabulary_matches_musicbert():
    assert oc.FIELD_SIZES == (256, 128, 129, 256, 128, 32, 254, 49)
    assert oc.VOCAB_SIZE == 1237 and oc.MASK == 1236
    assert len(oc.TS_LIST) == 254 and oc.TS_LIST[0] == (1, 1) and oc.TS_LIST[-1] == (128, 64)


def test_field_quantisers():
    # durations: exact for 16 codes, then the step doubles every 16 codes
    assert [oc.duration_code(d) for d in (0, 1, 15, 16, 17, 18, 47, 48)] == [0, 1, 15, 16, 16, 17, 31, 32]
    assert oc.duration_positions(16) == 16 and oc.duration_positions(17) == 18
    assert oc.duration_code(10**6) == 127
    assert oc.velocity_code(127) == 31 and oc.velocity_value(31) == 126
    assert oc.tempo_code(16) == 0 and oc.tempo_code(256) == 48 and oc.tempo_code(1000) == 48
    assert oc.tempo_code(120) == round(12 * np.log2(120 / 16))
    assert oc.reduce_time_signature(6, 8) == (6, 8)
    assert oc.reduce_time_signature(9, 4) == (3, 4)  # a bar longer than two whole notes is split
    assert oc.reduce_time_signature(6, 128) == (3, 64)
    # signatures MusicBERT cannot code still get a valid code
    for num, den in ((3, 128), (5, 6), (7, 0)):
        assert 0 <= oc.time_signature_code(num, den) < 254


def test_example_encoding_fields():
    enc = oc.encode_piece(example_piece())
    assert enc.shape == (208, 8)
    assert enc[:, 0].max() == 7  # eight bars of 4/4
    assert set(enc[:, 1].tolist()) <= set(range(64))  # positions inside a 4/4 bar
    assert 128 in enc[:, 2].tolist()  # drums
    drum_pitch = enc[enc[:, 2] == 128, 3]
    assert drum_pitch.min() >= 128  # drums at pitch + 128
    assert set(enc[:, 6].tolist()) == {oc.time_signature_code(4, 4)}
    assert set(enc[:, 7].tolist()) == {oc.tempo_code(100)}
    assert np.all(np.diff(enc[:, 0]) >= 0)


@pytest.mark.parametrize("name", ["MIDIs_multitrack/Funkytown.mid", "MIDIs_one_track/POP909_191.mid",
                                  "MIDIs_one_track/6354774_Macabre Waltz.mid"])
def test_round_trip_on_real_files(name):
    piece = read_midi(shared_path("fixtures", *name.split("/")))
    enc = oc.encode_piece(piece)
    assert len(enc) == len(piece)
    back = oc.decode_octuple(enc, ticks_per_beat=480)
    again = oc.encode_piece(back)
    # decoding is the inverse up to the code's quantisation: the re-encoding is identical
    assert np.array_equal(enc, again)


def test_ids_and_windows():
    enc = oc.encode_piece(read_midi(shared_path("fixtures", "MIDIs_one_track", "Maestro_1.mid")))
    assert len(enc) > 2000
    ids = oc.to_ids(enc)
    assert ids.min() >= 4 and ids.max() < oc.MASK
    assert np.array_equal(oc.from_ids(ids), enc)
    wins = oc.windows(enc)
    assert all(len(w.notes) <= 1000 for w in wins)
    assert wins[1].start == 250 and wins[-1].start + len(wins[-1].notes) <= len(enc)
    assert all(w.notes[:, 0].min() == 0 and w.notes[:, 0].max() < 256 for w in wins)
    seq = oc.sequence_ids(wins[0].notes)
    assert seq[:8].tolist() == [oc.BOS] * 8 and seq[-8:].tolist() == [oc.EOS] * 8
    shifted = oc.shift_bars(wins[0].notes, np.random.default_rng(0))
    assert shifted[:, 0].max() < 256
