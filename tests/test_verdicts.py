"""The MNIST verdicts (book/verdicts.py) on hand-made tables where the right answer is known."""

import itertools

import pandas as pd
import pytest

import verdicts

DEFAULTS = {"vae": 1.0, "hebae": 1.0, "wae": 10.0}


class FakeRun:
    def __init__(self, curve):
        self.history = [{"objective": -v, "test_elbo": v} for v in curve]


def _row(model, lam, seed, rec, reg, k=20, elbo=-100.0, active=20, corr=0.1):
    return {
        "model": model, "lam": lam, "seed": seed, "latent_dim": k, "test_rec": rec, "test_reg": reg,
        "test_objective": rec + lam * reg, "test_elbo": elbo, "refit_iw_log_likelihood": elbo + 1,
        "active_dims": active, "mean_abs_offdiag_corr": corr, "mean_abs_offdiag_corr_active": corr,
        "run": FakeRun([elbo - 5, elbo]),
    }


def test_lambda_sensitivity_uses_the_unweighted_bound_not_the_objective():
    # HEBAE's regulariser is large, so its λ-weighted objective swings enormously with λ, while
    # rec + reg barely moves; the VAE's rec + reg moves by 40 nats. The claim holds for rec + reg.
    rows = []
    for seed, lam in itertools.product(range(3), (0.01, 1.0, 100.0)):
        rows.append(_row("hebae", lam, seed, rec=80 + lam / 100, reg=30))
        rows.append(_row("vae", lam, seed, rec=80 + 40 * (lam == 100.0), reg=5))
    sweep = pd.DataFrame(rows)
    verdict, detail = verdicts.spread_over_lambda(sweep, "objective")
    assert verdict == "yes", detail
    weighted = sweep.assign(test_reg=0.0, test_rec=sweep.test_objective)  # what a λ-weighted reading would see
    assert verdicts.spread_over_lambda(weighted, "objective")[0] == "no"


def test_a_difference_within_the_seed_spread_is_too_close_to_call():
    # HEBAE keeps 20 dimensions; the VAE loses 4, 5 and 0: a mean difference of 3 against a
    # spread that three seeds cannot narrow below it (t interval 3 ± 6.6).
    rows = [_row("vae", 1.0, s, 90, 5, active=a) for s, a in enumerate((16, 15, 20))]
    rows += [_row("hebae", 1.0, s, 90, 5, active=20) for s in range(3)]
    verdict, detail = verdicts.collapse(pd.DataFrame(rows))
    assert verdict == verdicts.TOO_CLOSE and "too close 1/1" in detail and "seed 2: VAE 20" in detail
    rows[2]["active_dims"] = 15  # now 4, 5, 5: the interval excludes zero
    assert verdicts.collapse(pd.DataFrame(rows))[0] == "yes"


def test_the_rule_has_three_outcomes_and_needs_an_error():
    from hebae.fid import Interval

    assert verdicts.decide(Interval(2.0, 0.5), higher_is_better=True) == verdicts.A_BETTER
    assert verdicts.decide(Interval(2.0, 0.5), higher_is_better=False) == verdicts.B_BETTER
    assert verdicts.decide(Interval(0.5, 0.5), higher_is_better=False) == verdicts.TOO_CLOSE
    assert verdicts.decide(Interval(5.0, float("inf")), higher_is_better=False) == verdicts.TOO_CLOSE
    # One seed: no spread, nothing decided however large the difference.
    assert verdicts.over_seeds({0: 100.0}, {0: 1.0}, higher_is_better=True)[0] == verdicts.TOO_CLOSE
    # Scores without a stored error decide nothing; with errors the same gap is decided.
    assert verdicts.between_scores(10.0, None, 20.0, 1.0)[0] == verdicts.TOO_CLOSE
    assert verdicts.between_scores(10.0, 1.0, 20.0, 1.0)[0] == verdicts.A_BETTER
    assert verdicts.between_scores(10.0, 4.0, 20.0, 4.0)[0] == verdicts.TOO_CLOSE  # 10 < 1.96·√32
    assert verdicts.agreement([verdicts.A_BETTER, verdicts.TOO_CLOSE]) == "partly"
    assert verdicts.agreement([verdicts.B_BETTER, verdicts.TOO_CLOSE]) == "no"
    assert verdicts.tally([verdicts.A_BETTER, verdicts.B_BETTER, verdicts.TOO_CLOSE]).startswith("decided 2/3")
    with pytest.raises(TypeError, match="difference must be a hebae.fid.Interval"):
        verdicts.decide(1.0, higher_is_better=True)


def test_higher_at_every_k_needs_every_seed_and_every_epoch():
    rows = []
    for k, s in itertools.product((2, 20), range(2)):
        rows.append(_row("vae", 1.0, s, 0, 0, k=k, elbo=-110.0))
        rows.append(_row("hebae", 1.0, s, 0, 0, k=k, elbo=-100.0))
    table = pd.DataFrame(rows)
    assert verdicts.higher_at_every_k(table, [2, 20], "elbo")[0] == "yes"
    table.loc[(table.model == "hebae") & (table.latent_dim == 2) & (table.seed == 1), "test_elbo"] = -120.0
    # At k = 2 the final values now differ by +10 and −10 over the two seeds: too close (the
    # fake curves did not change, so the mean over epochs stays decided).
    verdict, detail = verdicts.higher_at_every_k(table, [2, 20], "elbo")
    assert verdict == "partly" and "too close 1/4" in detail, detail
    assert verdicts.higher_at_every_k(table, [2, 20], "refit")[0] == "yes"  # the refit column did not change
    with pytest.raises(ValueError, match="yardstick must be one of objective, elbo, refit"):
        verdicts.final(table, "own")


def test_claims_name_their_yardstick_and_label_the_training_objective():
    rows = []
    for model, k, s in itertools.product(("vae", "hebae", "wae"), (2, 20), range(2)):
        rows.append(_row(model, DEFAULTS[model], s, 90, 5, k=k))
    for model, lam, s in itertools.product(("vae", "hebae"), (0.1, 10.0), range(2)):
        rows.append(_row(model, lam, s, 90, 5))
    claims = verdicts.claims(pd.DataFrame(rows), DEFAULTS)
    yardsticks = [y for _, y, _, _ in claims]
    assert sum("not comparable across models" in y for y in yardsticks) == 2
    assert all(v in ("yes", "partly", "no", verdicts.TOO_CLOSE) for _, _, v, _ in claims)
