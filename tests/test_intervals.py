"""KID and the intervals of FID and KID (hebae.fid), checked for honesty: two disjoint samples
of one distribution are drawn again and again, and the stated intervals must cover the value
they claim to bracket at about their nominal rate.

Real features would take minutes to extract, so a cheap stand-in plays them: non-negative,
skewed, anisotropic features (|Gaussian|, like pool3's post-ReLU averages) in 64 dimensions.
"""

import numpy as np
import pytest

from hebae import fid

D, N = 64, 100
SCALE = 1 / np.sqrt(np.arange(1, D + 1))


def draw(rng, n=N, shift=0.0):
    x = rng.standard_normal((n, D)) * SCALE
    x[:, 0] += shift
    return np.abs(x)


def coverage(statistic, truth, reps, rng):
    """Fraction of ``reps`` fresh real-against-real intervals that contain ``truth``."""
    return np.mean([statistic(draw(rng), draw(rng)).covers(truth) for _ in range(reps)])


def test_kid_interval_covers_zero_between_two_real_samples_at_least_at_its_rate():
    # KID is unbiased: between two samples of one distribution its expectation is exactly 0.
    # The bootstrap error is conservative there (see hebae.fid._mmd2_bootstrap_se), so the
    # rate is at least nominal; the error must still be of the size of the true spread.
    rng = np.random.default_rng(0)
    draws = [fid.kid(draw(rng), draw(rng), resamples=50, seed=r) for r in range(150)]
    values, ses = np.array([k["kid"] for k in draws]), np.array([k["kid_se"] for k in draws])
    rate = np.mean([fid.Interval(v, se).covers(0.0) for v, se in zip(values, ses)])
    assert rate >= 0.9, rate
    assert np.mean(ses) < 3 * np.std(values), (np.mean(ses), np.std(values))
    # The test can fail: an interval a third as wide falls well short of 95 %.
    assert np.mean([fid.Interval(v, se / 3).covers(0.0) for v, se in zip(values, ses)]) < 0.85


def test_kid_error_matches_the_spread_when_the_sets_differ():
    # A model's samples differ from real images: there the bootstrap is consistent, and its
    # error must track the true spread of KID over fresh draws (within a factor of 1.5).
    rng = np.random.default_rng(6)
    draws = [fid.kid(draw(rng, shift=1.0), draw(rng), resamples=50, seed=r) for r in range(80)]
    values, ses = np.array([k["kid"] for k in draws]), np.array([k["kid_se"] for k in draws])
    assert np.std(values) / 1.5 < np.mean(ses) < 1.5 * np.std(values), (np.mean(ses), np.std(values))


def test_fid_interval_covers_the_expected_fid_at_this_sample_size():
    # FID is biased at N images per side, so its interval brackets the expected FID at N (the
    # value a verdict compares at that size), estimated here from many independent pairs.
    rng = np.random.default_rng(1)
    expected = np.mean([fid.frechet_distance_features(draw(rng), draw(rng)) for _ in range(200)])

    def fid_interval(a, b):
        return fid.Interval(fid.frechet_distance_features(a, b), fid.fid_bootstrap_se(a, b, resamples=30, seed=int(rng.integers(1 << 30))))

    rate = coverage(fid_interval, expected, 80, rng)
    assert rate >= 0.9, rate
    # Far from the truth the interval does not cover: a value shifted by five widths never is.
    a, b = draw(rng), draw(rng)
    i = fid_interval(a, b)
    assert not i.covers(i.value + 5 * i.half_width)


def test_kid_matches_the_published_estimator_on_one_subset():
    # With every subset the whole set, KID is the plain unbiased MMD² of the cubic kernel.
    rng = np.random.default_rng(2)
    x, y = draw(rng, 30), draw(rng, 30, shift=0.5)
    k = lambda a, b: (a @ b.T / D + 1) ** 3  # noqa: E731
    n = len(x)
    expected = (k(x, x).sum() - np.trace(k(x, x))) / (n * (n - 1)) + (k(y, y).sum() - np.trace(k(y, y))) / (n * (n - 1)) - 2 * k(x, y).mean()
    out = fid.kid(x, y)
    assert out["kid"] == pytest.approx(expected, rel=1e-12)
    assert out["kid_subsets"] == 1 and out["kid_subset_size"] == 30
    # Above the subset size, the published average over random subsets.
    sub = fid.kid(x, y, subsets=20, subset_size=10, seed=3)
    assert sub["kid_subsets"] == 20 and sub["kid_subset_size"] == 10 and sub["kid_se"] > 0


def test_kid_separates_what_it_should():
    rng = np.random.default_rng(3)
    same = fid.kid(draw(rng), draw(rng))
    apart = fid.kid(draw(rng, shift=1.5), draw(rng))
    assert abs(same["kid"]) < 3 * same["kid_se"]
    assert apart["kid"] > 3 * apart["kid_se"]


def test_interval_and_seed_spread():
    i = fid.Interval(10.0, 1.0)
    assert i.lo == pytest.approx(10 - 1.959964, abs=1e-5) and i.covers(11.9) and not i.covers(12.0)
    seeds = fid.over_seeds([1.0, 2.0, 3.0])
    assert seeds.df == 2 and seeds.value == 2.0 and seeds.half_width == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
    assert fid.over_seeds([5.0]).se == float("inf")
    assert f"{i:.1f}" == "10.0 ± 2.0"
    stored = {"gmm_fid": 50.0, "gmm_fid_se": 2.0, "gmm_kid": 0.01, "gmm_kid_se": 0.002, "fid": 60.0}
    assert set(fid.intervals(stored, prefix="gmm_")) == {"fid", "kid"} and set(fid.intervals(stored)) == set()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: fid.kid(np.ones((3, 4)), np.ones((5, 4))), "fake_features must have shape"),
        (lambda: fid.kid(np.ones((5, 4)), np.ones((5, 3))), "same dimension"),
        (lambda: fid.kid(np.ones((5, 4)), np.ones((5, 4)), subsets=0), "subsets must be an integer >= 1"),
        (lambda: fid.fid_bootstrap_se(np.ones((5, 4)), np.ones((5, 4)), resamples=1), "resamples must be an integer >= 2"),
        (lambda: fid.critical(1.5), "level must be in"),
        (lambda: fid.over_seeds([]), "values must be one or more finite numbers"),
        (lambda: fid.score(np.ones((5, 4)), np.ones((5, 4))), "reference must be a hebae.fid.Reference"),
    ],
)
def test_bad_input_names_the_parameter(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_score_reuses_the_reference_and_matches_the_separate_functions():
    rng = np.random.default_rng(5)
    real, fake = draw(rng, 60), draw(rng, 60, shift=0.5)
    ref = fid.Reference.of(real)
    out = fid.score(fake, ref, resamples=10)
    assert out["fid"] == pytest.approx(fid.frechet_distance_features(fake, real))
    assert (out["precision"], out["recall"]) == fid.precision_recall(real, fake)
    assert out["kid"] == pytest.approx(fid.kid(fake, real)["kid"])
