"""MusicBERT pretraining: bar-level masking statistics, data windows, and a short real training run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from midilm.cli import main
from midilm.codecs import octuple as oc
from midilm.models.encoder import MusicBertConfig, MusicBertForMaskedLM
from midilm.music.midi_io import read_midi
from midilm.train.encoder import (
    FIELD_HI,
    FIELD_LO,
    IGNORE,
    EncoderTrainConfig,
    MaskedWindows,
    collate,
    dataset_paths,
    evaluate_mlm,
    mask_sequence,
    piece_windows,
    train_encoder,
)
from tests.conftest import shared_path

FILE = ("fixtures", "MIDIs_multitrack", "Funkytown.mid")


@pytest.fixture(scope="module")
def notes() -> np.ndarray:
    return oc.encode_piece(read_midi(shared_path(*FILE)))


def _groups(window: np.ndarray, by_instrument: bool) -> np.ndarray:
    return window[:, 0] * 1000 + (window[:, 2] if by_instrument else 0)


@pytest.mark.parametrize("by_instrument", [True, False])
def test_bar_level_masking(notes, by_instrument):
    window = notes[:400].copy()
    window[:, 0] -= window[0, 0]
    ids = oc.sequence_ids(window)
    group = _groups(window, by_instrument)
    n_groups = len(np.unique(group))
    assert len(np.unique(window[:, 2])) > 1 and n_groups >= 10  # several instruments and bars to tell apart
    rng = np.random.default_rng(0)
    chosen_groups, total_groups, kinds = 0, 0, np.zeros(4)
    for _ in range(60):
        inputs, labels, decision = mask_sequence(ids, rng, by_instrument=by_instrument)
        d = decision[8:-8].reshape(-1, 8)
        # one decision per (group, field): every note of a group agrees, field by field
        for g in np.unique(group):
            rows = d[group == g]
            assert (rows == rows[0]).all()
            chosen_groups += int((rows[0] > 0).sum())
        total_groups += n_groups * 8
        assert len(set(decision[:8].tolist())) == 1 and len(set(decision[-8:].tolist())) == 1  # <s>, </s> whole
        kinds += np.bincount(decision, minlength=4)
        # labels: the original ids exactly where predicted
        assert np.array_equal(labels != IGNORE, decision > 0)
        assert np.array_equal(labels[decision > 0], ids[decision > 0])
        assert (inputs[decision == 1] == oc.MASK).all()
        assert np.array_equal(inputs[(decision == 0) | (decision == 2)], ids[(decision == 0) | (decision == 2)])
        rand = np.flatnonzero(decision == 3)
        field = rand % 8
        assert ((inputs[rand] >= FIELD_LO[field]) & (inputs[rand] < FIELD_HI[field])).all()
    rate = chosen_groups / total_groups
    assert 0.13 < rate < 0.17, rate
    share = kinds[1:] / kinds[1:].sum()
    assert abs(share[0] - 0.8) < 0.05 and abs(share[1] - 0.1) < 0.04 and abs(share[2] - 0.1) < 0.04, share
    # without instrument groups, all instruments of a bar share the decision
    if not by_instrument:
        d = decision[8:-8].reshape(-1, 8)
        bar0 = d[window[:, 0] == window[0, 0]]
        assert (bar0 == bar0[0]).all()
    with pytest.raises(ValueError):
        mask_sequence(ids[:-3], rng)


def test_windows_samples_and_collate(notes):
    windows = piece_windows([notes.astype(np.int16)], 128)
    assert all(len(w) <= 128 and w[:, 0].min() == 0 for w in windows)
    data = MaskedWindows(windows, 50, seed=3)
    a, b = data[7], data[7]
    assert np.array_equal(a["input_ids"], b["input_ids"])  # an item is the same every time (resumable)
    assert not np.array_equal(data[7]["input_ids"], data[7 + len(windows) % 50 or 8]["input_ids"])
    batch = collate([data[0], data[1], data[2]])
    lengths = [len(data[i]["input_ids"]) for i in range(3)]
    assert batch["input_ids"].shape == (3, max(lengths)) and batch["attention_mask"].shape == (3, max(lengths) // 8)
    assert batch["attention_mask"].sum(1).tolist() == [n // 8 for n in lengths]
    # bar shift: windows move inside 0..255 but keep their bar spacing
    bars = [data[i]["labels"] for i in range(5)]
    assert len(bars) == 5


def test_dataset_paths_reject_missing_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="split"):
        dataset_paths(tmp_path)


MICRO = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


def test_short_training_reduces_loss_and_resumes(tmp_path, notes):
    midi_dir = tmp_path / "midi"
    midi_dir.mkdir()
    shutil.copy(shared_path(*FILE), midi_dir / "a.mid")
    out = tmp_path / "enc"
    cfg = dict(data=None, midi_dir=str(midi_dir), output=str(out), max_notes=64, batch_size=8, lr=3e-3,
               save_steps=10, logging_steps=5, threads=1, model_overrides=MICRO)
    train_encoder(EncoderTrainConfig(steps=10, **cfg), progress=False)
    first = json.loads((out / "loss_history.json").read_text())
    train_encoder(EncoderTrainConfig(steps=30, resume=True, **cfg), progress=False)
    history = json.loads((out / "loss_history.json").read_text())
    logged = {h["step"]: h["loss"] for h in history if "loss" in h}
    # the second run continued from step 10: the first run's log is kept as it was, then steps 15..30 follow
    assert all(logged[h["step"]] == h["loss"] for h in first if "loss" in h)
    assert sorted(logged) == [5, 10, 15, 20, 25, 30]
    assert (out / "loss.png").stat().st_size > 1000 and (out / "model.safetensors").is_file()
    report = json.loads((out / "train_report.json").read_text())
    assert report["train_files"] == 1 and report["config"]["max_notes"] == 64 and "held_out" not in report

    windows = piece_windows([notes.astype(np.int16)], 64)[:24]
    torch.manual_seed(0)
    fresh = MusicBertForMaskedLM(MusicBertConfig.tiny(max_notes=64, **MICRO))
    trained = MusicBertForMaskedLM.from_pretrained(out)
    assert trained.config.max_notes == 64 and trained.config.hidden_size == 64
    before, after = evaluate_mlm(fresh, windows), evaluate_mlm(trained, windows)
    assert before["loss"] > 6.5  # about ln(1237) at initialisation
    assert after["loss"] < before["loss"] - 2.0 and after["accuracy"] > before["accuracy"] + 0.2, (before, after)
    assert set(after["field_accuracy"]) == set(oc.FIELDS)


def test_cli_errors(tmp_path, capsys):
    assert main(["train", "encoder", "--data", str(tmp_path), "-o", str(tmp_path / "o")]) == 1
    assert "no such dataset split" in capsys.readouterr().err
    assert main(["train", "encoder", "--midi-dir", str(tmp_path), "-o", str(tmp_path / "o")]) == 1
    assert "no readable MIDI" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
