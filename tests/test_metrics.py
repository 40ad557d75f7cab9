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


def scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula through scipy's sqrtm: sound only where the covariances are well conditioned."""
    from scipy import linalg

    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.mark.parametrize("seed", range(5))
def test_frechet_distance_matches_sqrtm_on_well_conditioned_sets(seed):
    pytest.importorskip("scipy")
    rng = np.random.default_rng(seed)
    d = 6
    a = rng.normal(size=(200, d)) @ rng.normal(size=(d, d))  # correlated, full rank: 200 vectors >> 6 dimensions
    b = rng.normal(size=(150, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)
    reference = scipy_frechet(a, b)
    assert np.linalg.cond(np.cov(a, rowvar=False)) < 1e4 and np.linalg.cond(np.cov(b, rowvar=False)) < 1e4
    # both routes round differently (eigh vs a Schur form): equal to well within 1e-8 relative
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-8)
    assert frechet_distance(b, a) == pytest.approx(reference, rel=1e-8)  # symmetric


def test_frechet_distance_of_two_vectors_per_set_is_the_closed_form():
    # 2 vectors in 24 dimensions: each covariance is u u^T (rank 1, 23 zero eigenvalues), so S1 S2 is singular,
    # where the matrix square root has no bounded derivative and a Schur-based sqrtm divides by sums of zero
    # eigenvalues. In closed form tr((u u^T w w^T)^(1/2)) = |u.w|.
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, b = rng.normal(size=(2, 24)), rng.normal(size=(2, 24)) * 3 + 1
        u, w = (a[0] - a[1]) / np.sqrt(2), (b[0] - b[1]) / np.sqrt(2)
        exact = ((a.mean(0) - b.mean(0)) ** 2).sum() + u @ u + w @ w - 2 * abs(u @ w)
        assert frechet_distance(a, b) == pytest.approx(exact, rel=1e-9)  # rounding only


@pytest.mark.parametrize("n,d,k", [(3, 24, 2), (4, 24, 3), (10, 24, 5), (30, 24, 3), (40, 64, 8)])
def test_frechet_distance_in_a_subspace_is_the_distance_there(n, d, k):
    # sets that vary in k of d dimensions (rank-deficient covariances, d - k exact zero eigenvalues at least):
    # rotating them into d dimensions changes nothing, so the value is the k-dimensional one. Zero-padding
    # and a rotation make S1 S2 provably singular whatever the kernels round.
    rng = np.random.default_rng(n * d + k)
    a_low = rng.normal(size=(n, k)) @ rng.normal(size=(k, k))
    b_low = rng.normal(size=(n + 3, k)) * 2 + rng.normal(size=k)
    low = frechet_distance(a_low, b_low)
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    shift = rng.normal(size=d)
    pad = np.zeros((1, d - k))
    a = np.hstack([a_low, np.repeat(pad, len(a_low), 0)]) @ rotation + shift
    b = np.hstack([b_low, np.repeat(pad, len(b_low), 0)]) @ rotation + shift
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value >= 0
    assert value == pytest.approx(low, rel=1e-7, abs=1e-9)  # the rotation rounds, nothing more
    if n > k + 5:  # enough vectors for the k-dimensional covariances to be well conditioned
        assert low == pytest.approx(scipy_frechet(a_low, b_low), rel=1e-7)


def test_frechet_distance_with_constant_and_duplicated_features():
    # a feature constant in both sets (zero rows and columns) and a feature copied (a singular 2x2 block) make
    # the covariances singular by construction. (x, y, z, x, 7, 7) is a rotation of (sqrt(2) x, y, z, 0, 7, 7):
    # the pair (x, x) turned by 45 degrees is (sqrt(2) x, 0); so is the distance.
    pytest.importorskip("scipy")
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(60, 3)) * 1.5 + 0.5

    def widen(x: np.ndarray) -> np.ndarray:
        return np.hstack([x, x[:, :1], np.full((len(x), 2), 7.0)])

    scale = np.array([np.sqrt(2), 1.0, 1.0])
    expected = scipy_frechet(a * scale, b * scale)  # 3 full-rank dimensions: the textbook formula is sound
    value = frechet_distance(widen(a), widen(b))
    assert np.isfinite(value) and value == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
@pytest.mark.parametrize("n,d", [(2, 1), (2, 24), (3, 24), (5, 5), (25, 24), (200, 24)])
def test_frechet_distance_is_finite_non_negative_and_zero_on_identical_sets(n, d, scale):
    rng = np.random.default_rng(n + d)
    a = rng.normal(size=(n, d)) * scale
    b = rng.normal(size=(n + 1, d)) * scale
    for x, y in ((a, b), (b, a), (a, a + scale)):
        value = frechet_distance(x, y)
        assert np.isfinite(value) and value >= 0
    trace = np.trace(np.atleast_2d(np.cov(a, rowvar=False)))
    # rounding noise in the eigenvalues is ~1e-16 of the largest; the root magnifies it to ~1e-8 at worst
    assert frechet_distance(a, a) <= 1e-7 * trace
    assert frechet_distance(a, a + scale) == pytest.approx(d * scale**2, rel=1e-6)  # a pure shift


def test_frechet_distance_refuses_what_it_cannot_measure():
    a = np.ones((4, 3))
    with pytest.raises(ValueError, match="at least 2 vectors"):
        frechet_distance(a[:1], a)
    with pytest.raises(ValueError, match="same number of columns"):
        frechet_distance(a, a[:, :2])
    b = np.arange(12.0).reshape(4, 3)
    b[0, 0] = np.nan
    assert np.isnan(frechet_distance(b, np.arange(12.0).reshape(4, 3)))
