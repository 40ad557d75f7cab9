"""The published metrics on hand-checkable cases (CKD's relative-key rule the right way round)."""

from __future__ import annotations

import numpy as np
import pytest

from midilm.evaluate.metrics import (
    ck,
    ckd,
    frechet_distance,
    groove_consistency,
    instrument_scores,
    pitch_class_entropy,
    scale_consistency,
    tb,
    tbt,
    tempo_bin,
)
from midilm.music.examples import example_piece


def test_tempo_bins():
    assert tempo_bin(39) == 0 and tempo_bin(40) == 1 and tempo_bin(125) == 5 and tempo_bin(300) == 8
    assert tb(120, 130) and not tb(105, 115) and tbt(105, 115) and not tbt(65, 115)
    assert not tb(None, 120)


@pytest.mark.parametrize("pred,target,same,relative", [
    ("C major", "C major", True, True),
    ("Db major", "C# major", True, True),
    ("C major", "A minor", False, True),  # relative major of A minor is C (A + 3)
    ("A minor", "C major", False, True),
    ("Eb major", "C minor", False, True),
    ("A major", "C minor", False, False),  # the public script's backwards rule would accept this
    ("C minor", "A major", False, False),
    ("E-flat major", "Eb major", True, True),
    ("nonsense", "C major", False, False),
])
def test_ck_and_ckd(pred, target, same, relative):
    assert ck(pred, target) is same
    assert ckd(pred, target) is relative


def test_instrument_scores():
    assert instrument_scores({"piano", "violin"}, {"piano"}) == (0.5, 1.0)
    assert instrument_scores(set(), {"piano"}) == (0.0, 0.0)


def test_symbolic_features_of_the_example():
    piece = example_piece()
    assert scale_consistency(piece) == 1.0  # all in C major
    assert 2.0 < pitch_class_entropy(piece) < np.log2(12)
    assert groove_consistency(piece) > 0.9  # the same rhythm every bar


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 3))
    assert frechet_distance(a, a) < 1e-6
    assert frechet_distance(a, a + 2.0) == pytest.approx(12.0, rel=0.05)
