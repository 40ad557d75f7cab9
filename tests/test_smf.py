"""The C scanner and its pure-Python twin agree on every real file, errors included."""

from __future__ import annotations

import glob

import numpy as np
import pytest

from midilm.music import smf
from tests.conftest import SHARED_DATA, shared_path

FIELDS = ("tick", "track", "kind", "channel", "d1", "d2")


def _all_midi() -> list[str]:
    files = sorted(glob.glob(str(SHARED_DATA / "fixtures" / "**" / "*.mid"), recursive=True))
    files += sorted(glob.glob(str(SHARED_DATA / "pop909" / "POP909" / "00*" / "*.mid")))[:10]
    files += sorted(glob.glob(str(SHARED_DATA / "nottingham" / "MIDI" / "*.mid")))[:10]
    return files


def _scan_both(data: bytes):
    out = []
    for fn in (smf.scan_smf, smf.scan_smf_python):
        try:
            out.append(fn(data))
        except smf.SmfError as e:
            out.append(str(e))
    return out


def test_c_extension_is_built():
    assert smf._smfscan is not None, "the C scanner did not build; reinstall with a C compiler present"


@pytest.mark.parametrize("path", _all_midi() or ["missing"])
def test_twins_agree_on_real_files(path):
    if path == "missing":
        shared_path("fixtures")
    a, b = _scan_both(open(path, "rb").read())
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    assert (a.format, a.ntracks, a.ticks_per_beat) == (b.format, b.ntracks, b.ticks_per_beat)
    for f in FIELDS:
        assert np.array_equal(getattr(a, f), getattr(b, f)), f


def test_twins_agree_on_truncations():
    data = open(shared_path("fixtures", "MIDIs_multitrack", "Aicha.mid"), "rb").read()
    for cut in (0, 3, 13, 14, 22, 23, 100, 1001, len(data) // 2, len(data) - 1):
        a, b = _scan_both(data[:cut])
        assert isinstance(a, str) and a == b, cut


def test_corrupt_fixture_is_rejected_with_reason():
    data = open(shared_path("fixtures", "MIDIs_corrupted", "ValueError_Control168.mid"), "rb").read()
    with pytest.raises(smf.SmfError, match="data byte"):
        smf.scan_smf(data)


def test_running_status_and_note_on_zero_velocity():
    # one track: note on (90 3C 64), running status note-on velocity 0 (= note off), program change
    track = bytes([0x00, 0x90, 0x3C, 0x64, 0x60, 0x3C, 0x00, 0x00, 0xC1, 0x05, 0x00, 0xFF, 0x2F, 0x00])
    header = b"MThd" + (6).to_bytes(4, "big") + bytes([0, 0, 0, 1, 0, 96])
    data = header + b"MTrk" + len(track).to_bytes(4, "big") + track
    for ev in (smf.scan_smf(data), smf.scan_smf_python(data)):
        assert ev.kind.tolist() == [smf.NOTE_ON, smf.NOTE_OFF, smf.PROGRAM]
        assert ev.tick.tolist() == [0, 96, 96]
        assert ev.channel.tolist() == [0, 0, 1]
