"""The paper's MNIST claims and the landscape chapter's questions, judged from stored runs.

Every comparison has three outcomes, by one rule (stated on the FID chapter, book/fid.md): the
95 % interval of the difference A − B is computed, and the comparison is decided for the better
side only when that interval excludes zero; otherwise it is "too close to call at this sample
size". The difference's interval comes from

* seeds (:func:`over_seeds`): the paired differences of the same quantity seed by seed, with
  Student's t on their spread (the MNIST claims; one seed decides nothing);
* a run's own error (:func:`between_scores`): FID's bootstrap error or KID's standard error,
  combined as sqrt(se_A² + se_B²) (the landscape and CelebA, per (dataset, seed) pair).

A row holds one or more comparisons and says "yes" when every one is decided for the claim,
"too close to call at this sample size" when none is decided, "no" when some are decided and
none for the claim, "partly" when some but not all are decided for it; its details count how many were decided each way. Each row names
its yardstick, the quantity it is computed from:

* ``objective``: each model's own training objective evaluated at λ = 1, i.e. reconstruction +
  regulariser, *unweighted*, whatever λ the run was trained with. For HEBAE this is the bound of
  the paper's Eq. 13 under a data-dependent prior, so it bounds no likelihood and is not
  comparable across models; rows on it are labelled as training objectives.
* ``elbo``: the test ELBO under N(0, I) with the model's trained posterior.
* ``refit``: the importance-weighted log p(x) under N(0, I) with the trained means and decoder
  and one posterior scale per dimension refitted on held-out images.

The functions take the runs as a pandas DataFrame with one row per run (``runs.frame``).
"""

from __future__ import annotations

import numpy as np

from hebae.fid import LEVEL, Interval, over_seeds as _seed_interval

A_BETTER, B_BETTER, TOO_CLOSE = "A better", "B better", "too close to call at this sample size"

YARDSTICKS = {
    "objective": "training objective at λ = 1 (rec + reg; each model's own, not comparable across models)",
    "elbo": "test ELBO under N(0, I), trained posterior",
    "refit": "importance-weighted log p(x) under N(0, I), posterior scale refitted (final values only: no per-epoch curve)",
}
# Per-epoch counterparts in the history, for "faster" (the refit is made once, at the end).
CURVES = {"objective": ("objective", -1.0), "elbo": ("test_elbo", 1.0)}


def final(df, yardstick: str):
    """The final value of a yardstick per run, higher is better."""
    if yardstick == "objective":
        return -(df.test_rec + df.test_reg)
    if yardstick == "elbo":
        return df.test_elbo
    if yardstick == "refit":
        return df.refit_iw_log_likelihood
    raise ValueError(f"yardstick must be one of {', '.join(YARDSTICKS)}; got {yardstick!r}")


def decide(difference: Interval, *, higher_is_better: bool) -> str:
    """The rule: A better, B better, or too close, from the interval of A − B."""
    if not isinstance(difference, Interval):
        raise TypeError(f"difference must be a hebae.fid.Interval; got {type(difference).__name__}")
    if not np.isfinite(difference.se) or difference.lo <= 0 <= difference.hi:
        return TOO_CLOSE
    a_higher = difference.value > 0
    return A_BETTER if a_higher == higher_is_better else B_BETTER


def over_seeds(a: dict, b: dict, *, higher_is_better: bool, level: float = LEVEL) -> tuple[str, Interval]:
    """Outcome and interval of the paired difference A − B over the seeds both have."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("a and b must share at least one seed")
    difference = _seed_interval([a[s] - b[s] for s in seeds], level)
    return decide(difference, higher_is_better=higher_is_better), difference


def between_scores(a: float, a_se: float | None, b: float, b_se: float | None, *, higher_is_better: bool = False,
                   level: float = LEVEL) -> tuple[str, Interval]:
    """Outcome and interval of A − B for two scores with their own standard errors, taken as
    independent: when both share a real set their errors are positively correlated, so the
    combined error is if anything too large and the rule errs towards "too close". A missing
    error (a run stored before errors were) counts as infinite: nothing is decided on it."""
    se = float(np.hypot(a_se, b_se)) if a_se is not None and b_se is not None and np.isfinite([a_se, b_se]).all() else float("inf")
    difference = Interval(float(a - b), se, level)
    return decide(difference, higher_is_better=higher_is_better), difference


def agreement(outcomes: list[str]) -> str:
    """A row's verdict from its comparisons' outcomes, A being the side the claim favours."""
    if not outcomes:
        raise ValueError("outcomes must hold at least one comparison")
    if all(o == A_BETTER for o in outcomes):
        return "yes"
    if all(o == TOO_CLOSE for o in outcomes):
        return TOO_CLOSE
    return "partly" if A_BETTER in outcomes else "no"


def tally(outcomes: list[str]) -> str:
    """How many comparisons were decided each way and how many were too close."""
    n = len(outcomes)
    won, lost = outcomes.count(A_BETTER), outcomes.count(B_BETTER)
    return f"decided {won + lost}/{n} (for the claim {won}, against {lost}), too close {n - won - lost}/{n}"


def counts(rows) -> dict[str, int]:
    """Rows per verdict, for the sentence under a claims table."""
    verdicts = [r[2] for r in rows]
    return {v: verdicts.count(v) for v in ("yes", "partly", "no", TOO_CLOSE)}


def _by_seed(df, model: str, key) -> dict:
    rows = df[df.model == model]
    return dict(zip(rows.seed, key(rows)))


def _ci(difference: Interval) -> str:
    return f"{difference.value:+.1f} ± {difference.half_width:.1f}" if np.isfinite(difference.se) else f"{difference.value:+.1f} (one seed: no interval)"


def higher_at_every_k(base, dims, yardstick: str) -> tuple[str, str]:
    """Claim 1: HEBAE's final value is above the VAE's at every k, and where a per-epoch curve
    exists also over training ("faster": the mean of the curve over epochs). One comparison per
    k and per reading, each over seeds (paired differences, 95 % t interval)."""
    outcomes, details = [], []
    for k in dims:
        at_k = base[base.latent_dim == k]
        h, v = _by_seed(at_k, "hebae", lambda r: final(r, yardstick)), _by_seed(at_k, "vae", lambda r: final(r, yardstick))
        outcome, diff = over_seeds(h, v, higher_is_better=True)
        outcomes.append(outcome)
        text = f"k={k}: {np.mean(list(h.values())):.1f} vs {np.mean(list(v.values())):.1f}, final {_ci(diff)}"
        if yardstick in CURVES:
            key, sign = CURVES[yardstick]
            area = lambda r: [sign * float(np.mean([e[key] for e in run.history])) for run in r.run]  # noqa: E731
            outcome, diff = over_seeds(_by_seed(at_k, "hebae", area), _by_seed(at_k, "vae", area), higher_is_better=True)
            outcomes.append(outcome)
            text += f", mean over epochs {_ci(diff)}"
        details.append(text)
    reading = "final value and mean over epochs" if yardstick in CURVES else "final value"
    return agreement(outcomes), (
        f"HEBAE vs VAE, {reading} (means over seeds; HEBAE − VAE with its 95 % interval over seeds): "
        + "; ".join(details) + f"; {tally(outcomes)}"
    )


def spread_over_lambda(sweep, yardstick: str) -> tuple[str, str]:
    """Claim 2: HEBAE's final value varies less over the λ grid than the VAE's. The spread is
    max − min over λ of the yardstick, never of the λ-weighted objective; one comparison over seeds."""
    spreads = {}
    for model in ("vae", "hebae"):
        rows = sweep[sweep.model == model].assign(value=final(sweep[sweep.model == model], yardstick))
        spreads[model] = rows.groupby("seed").value.agg(lambda v: v.max() - v.min())
    outcome, diff = over_seeds(spreads["hebae"].to_dict(), spreads["vae"].to_dict(), higher_is_better=False)
    lams = sorted(sweep.lam.unique().tolist())
    seeds = sorted(set(spreads["vae"].index) & set(spreads["hebae"].index))
    per_seed = "; ".join(f"seed {s}: HEBAE {spreads['hebae'][s]:.1f}, VAE {spreads['vae'][s]:.1f}" for s in seeds)
    return agreement([outcome]), (
        f"spread (max − min) of the final value over λ ∈ {lams}, nats: {per_seed}; HEBAE − VAE {_ci(diff)}; {tally([outcome])}"
    )


def collapse(k20, k: int = 20) -> tuple[str, str]:
    """Claim 3: HEBAE keeps more active dimensions than the VAE (which collapses some), over seeds."""
    v, h = _by_seed(k20, "vae", lambda r: r.active_dims), _by_seed(k20, "hebae", lambda r: r.active_dims)
    outcome, diff = over_seeds({s: float(x) for s, x in h.items()}, {s: float(x) for s, x in v.items()}, higher_is_better=True)
    seeds = sorted(set(v) & set(h))
    per_seed = ", ".join(f"seed {s}: VAE {v[s]}, HEBAE {h[s]}" for s in seeds)
    return agreement([outcome]), f"active dimensions of {k}: {per_seed}; HEBAE − VAE {_ci(diff)}; {tally([outcome])}"


def closest_to_identity(k20, column: str = "mean_abs_offdiag_corr") -> tuple[str, str]:
    """Claim 4: HEBAE's mean |off-diagonal correlation| is below the VAE's and below the WAE's:
    two comparisons, each over seeds."""
    values = {m: _by_seed(k20, m, lambda r: r[column]) for m in ("vae", "wae", "hebae")}
    outcomes, parts = [], []
    for other in ("vae", "wae"):
        outcome, diff = over_seeds(values["hebae"], values[other], higher_is_better=False)
        outcomes.append(outcome)
        parts.append(f"HEBAE − {other.upper()} {diff.value:+.3f} ± {diff.half_width:.3f}" if np.isfinite(diff.se) else f"HEBAE − {other.upper()} {diff.value:+.3f}")
    means = ", ".join(f"{m.upper()} {np.mean(list(values[m].values())):.3f}" for m in ("vae", "wae", "hebae"))
    return agreement(outcomes), f"mean |off-diagonal correlation| (mean over seeds): {means}; {'; '.join(parts)}; {tally(outcomes)}"


def claims(table, defaults: dict[str, float], *, k: int = 20) -> list[tuple[str, str, str, str]]:
    """Every verdict row: (claim, yardstick, verdict, our numbers). ``defaults`` maps each model
    to its default λ: the runs at that λ make the k sweep and the k = 20 comparisons."""
    default = table[table.lam == table.model.map(defaults)]
    dims = sorted(int(d) for d in default[default.model == "hebae"].latent_dim.unique())
    sweep = table[(table.latent_dim == k) & table.model.isin(["vae", "hebae"])]
    k20 = default[default.latent_dim == k]
    rows = []
    for yardstick in YARDSTICKS:
        rows.append(("HEBAE reaches a higher ELBO than the VAE, faster, at every k", YARDSTICKS[yardstick], *higher_at_every_k(default, dims, yardstick)))
    for yardstick in YARDSTICKS:
        rows.append(("HEBAE is less sensitive to λ", YARDSTICKS[yardstick], *spread_over_lambda(sweep, yardstick)))
    rows.append((f"The VAE's latent variances collapse; HEBAE's do not (k = {k})", "active dimensions of the encoder means", *collapse(k20, k)))
    rows.append((
        f"HEBAE's latent correlation is closer to the identity than the VAE's and the WAE's (k = {k})",
        "all dimensions (nearly built into HEBAE's regulariser; inflated for the VAE by collapsed dimensions)",
        *closest_to_identity(k20),
    ))
    rows.append((
        f"HEBAE's latent correlation is closer to the identity than the VAE's and the WAE's (k = {k})",
        "active dimensions only",
        *closest_to_identity(k20, "mean_abs_offdiag_corr_active"),
    ))
    return rows


CLAIMS_HEADER = ("claim of the paper", "yardstick", "borne out here?", "our numbers")
QUESTIONS_HEADER = ("question", "comparison", "answer here", "our numbers")


def markdown(rows, header=CLAIMS_HEADER) -> str:
    """A Markdown table of verdict rows (each a 4-tuple) under ``header``."""
    lines = ["| " + " | ".join(header) + " |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------- the landscape chapter


def variant(row) -> str:
    """A landscape run's row label: the model's name, or ``beta<β>`` for the VAE page at λ = β ≠ 1;
    ``<model>-<likelihood>`` for a Gaussian decoder, ``flexae-c<c>`` for FlexAE's prior generator
    below the page's default capacity (6)."""
    if row.model == "vae" and row.lam != 1.0:
        return f"beta{row.lam:g}"
    name = row.model
    likelihood = row.get("likelihood")
    if isinstance(likelihood, str) and likelihood.startswith("gaussian"):
        name += f"-{likelihood}"
    capacity = row.get("prior_capacity")
    if row.model == "flexae" and capacity is not None and capacity == capacity and int(capacity) != 6:
        name += f"-c{int(capacity)}"
    return name


def _paired(df, left: str, right: str, left_key: str, right_key: str):
    """``left_key`` of variant ``left`` and ``right_key`` of ``right`` per (dataset, seed)."""
    a = df[df.variant == left].set_index(["dataset", "seed"])[left_key]
    b = df[df.variant == right].set_index(["dataset", "seed"])[right_key]
    both = a.index.intersection(b.index)
    return a[both], b[both]


METRICS = {"fid": "FID", "kid": "KID"}


def lower(df, left: str, right: str, left_key: str, right_key: str, what: str, metric: str = "fid") -> tuple[str, str]:
    """Whether ``left_key`` of ``left`` is below ``right_key`` of ``right``, decided per (dataset,
    seed) pair by the rule on the two scores' own errors (``<key>_se`` columns; keys name FID
    columns, and ``metric`` "kid" reads the KID column of the same image set instead)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    left_key, right_key = _metric_key(left_key, metric), _metric_key(right_key, metric)
    a, b = _paired(df, left, right, left_key, right_key)
    a_se, b_se = _paired_se(df, left, right, left_key, right_key, a.index)
    outcomes = [between_scores(a[i], a_se[i], b[i], b_se[i], higher_is_better=False)[0] for i in a.index]
    scale = 1e3 if metric == "kid" else 1.0
    per = "; ".join(
        f"{d}: {scale * a.xs(d).mean():.1f} vs {scale * b.xs(d).mean():.1f}" for d in a.index.get_level_values(0).unique()
    )
    unit = " (×10³)" if metric == "kid" else ""
    return agreement(outcomes), f"{what}, {METRICS[metric]}{unit}, mean over seeds: {per}; per (dataset, seed) pair: {tally(outcomes)}"


def _metric_key(key: str, metric: str) -> str:
    """The column of ``metric`` for the image set that FID column ``key`` scores."""
    if metric == "fid":
        return key
    return f"kid_{key}" if key.endswith("gap") else key[: -len("fid")] + "kid"


def _paired_se(df, left, right, left_key, right_key, index):
    def se(variant, key):
        column = f"{key}_se"
        if column not in df:
            return {i: None for i in index}
        values = df[df.variant == variant].set_index(["dataset", "seed"])[column]
        return {i: (None if i not in values.index or values[i] != values[i] else float(values[i])) for i in index}

    return se(left, left_key), se(right, right_key)


def gap(df, prefix: str = "gmm_", column: str = "gap"):
    """Score of prior samples minus score of ex-post GMM samples (``prefix`` "gmm_" for the
    mixture on means, "gmm_draws_" on posterior draws): what a fitted sampler gains, for FID
    (``column``) and KID (``kid_<column>``), with errors combined as for independent scores."""
    out = df.assign(**{column: df.fid - df[f"{prefix}fid"]}) if f"{prefix}fid" in df else df.copy()
    for metric, name in (("fid", column), ("kid", f"kid_{column}")):
        if f"{prefix}{metric}" in df and metric in df:
            out[name] = df[metric] - df[f"{prefix}{metric}"]
            if f"{metric}_se" in df and f"{prefix}{metric}_se" in df:
                out[f"{name}_se"] = np.hypot(df[f"{metric}_se"], df[f"{prefix}{metric}_se"])
    return out


def landscape_questions(df, fixed_prior: list[str], labels: dict[str, str], metric: str = "fid") -> dict[tuple, tuple[str, str, str, str]]:
    """The chapter's verdict rows, (question, comparison, verdict, numbers), keyed by what they
    compare (``("gmm", variant)``, ``("gap", other)``, ...) so prose can quote a row by its key,
    from a frame of landscape runs with ``variant`` and ``gap`` columns (:func:`gap`).

    ``metric`` "fid" or "kid" picks the score every row compares. Runs with a mixture fitted to
    posterior draws (``gmm_draws_fid``) add rows ``("gmm_draws", variant)``: prior samples against
    that mixture's, for each variant of ``fixed_prior`` that has it.
    """
    name = METRICS.get(metric, metric)
    rows = {}
    for v in fixed_prior:
        rows[("gmm", v)] = (
            "Does an ex-post GMM sampler beat a fixed N(0, I) prior?", f"{labels[v]} (GMM on encoder means)",
            *lower(df, v, v, "gmm_fid", "fid", "GMM vs N(0, I) samples", metric),
        )
    if "gmm_draws_fid" in df:
        for v in fixed_prior:
            if df[df.variant == v]["gmm_draws_fid"].notna().any():
                rows[("gmm_draws", v)] = (
                    "Does an ex-post GMM sampler beat a fixed N(0, I) prior?", f"{labels[v]} (GMM on posterior draws)",
                    *lower(df, v, v, "gmm_draws_fid", "fid", "GMM vs N(0, I) samples", metric),
                )
    rows[("prior", "vae")] = (
        "Does HEBAE sample better from N(0, I) than the VAE?", f"{name} of N(0, I) samples, HEBAE vs VAE",
        *lower(df, "hebae", "vae", "fid", "fid", "N(0, I) samples", metric),
    )
    for other in ("vae", "wae", "ae"):
        rows[("gap", other)] = (
            "Does regularising the aggregate, as HEBAE does, close the gap to an ex-post sampler?",
            f"HEBAE gains less from the GMM than the {labels[other]} (gap: {name} of N(0, I) samples − {name} of GMM samples)",
            *lower(df, "hebae", other, "gap", "gap", "gap", metric),
        )
    if "draws_gap" in df:
        # The VAE's mixture on means meets codes its prior never saw (its prior was matched to
        # draws): the same question with both mixtures fitted to posterior draws.
        for other in ("vae",):
            if df[df.variant == other]["draws_gap"].notna().any() and df[df.variant == "hebae"]["draws_gap"].notna().any():
                rows[("gap_draws", other)] = (
                    "Does regularising the aggregate, as HEBAE does, close the gap to an ex-post sampler?",
                    f"HEBAE gains less from the GMM than the {labels[other]}, both mixtures fitted to posterior draws",
                    *lower(df, "hebae", other, "draws_gap", "draws_gap", "gap (GMM on draws)", metric),
                )
    for other in ("ae", "rae"):
        rows[("fitted", other)] = (
            "Does HEBAE sample from N(0, I) better than an autoencoder with an ex-post GMM?",
            f"HEBAE's {name} with N(0, I) below {labels[other]} + GMM's",
            *lower(df, "hebae", other, "fid", "gmm_fid", "HEBAE N(0, I) vs GMM samples", metric),
        )
    for learned in ("twostage", "vamp"):
        rows[("learned", learned)] = (
            "Does a learned prior beat the VAE's N(0, I)?", f"{labels[learned]} vs VAE, {name} of prior samples",
            *lower(df, learned, "vae", "fid", "fid", "prior samples", metric),
        )
    return rows


# The lecture's second half: (kind, left, right) -> (question, left's score, right's score, what is scored). Each row
# asks whether left's score is below right's. The two-stage VAE against its own first stage is also the lecture's
# Table 1 ordering of the two; it is asked once.
SECOND_HALF = {
    ("learned", "flexae", "vae"): ("Does a learned prior beat N(0, I)?", "fid", "fid", "prior samples"),
    ("learned", "flexae", "waegan"): ("Does a learned prior beat N(0, I)?", "fid", "fid", "prior samples"),
    ("learned", "flexae", "aae"): ("Does a learned prior beat N(0, I)?", "fid", "fid", "prior samples"),
    ("learned", "twostage-gaussian-learned", "vae-gaussian-learned"): ("Does a learned prior beat N(0, I)?", "fid", "fid", "prior samples"),
    ("expost", "flexae", "flexae"): ("Does a learned prior beat an ex-post GMM?", "fid", "gmm_fid", "learned prior vs GMM on its own codes"),
    ("expost", "flexae", "ae"): ("Does a learned prior beat an ex-post GMM?", "fid", "gmm_fid", "FlexAE prior vs AE + GMM samples"),
    ("expost", "flexae", "rae"): ("Does a learned prior beat an ex-post GMM?", "fid", "gmm_fid", "FlexAE prior vs RAE + GMM samples"),
    ("table1", "maskaae", "waegan"): ("Table 1: MaskAAE below WAE-GAN?", "fid", "fid", "prior samples"),
    ("table1", "waegan", "wae"): ("Table 1: WAE-GAN below WAE-MMD?", "fid", "fid", "prior samples"),
    ("table1", "vae", "vae-gaussian-fixed"): ("Table 1: the VAE with cross-entropy below the VAE with a fixed-variance Gaussian?",
                                             "fid", "fid", "prior samples"),
    ("table5", "flexae-c4", "flexae-c1"): ("Table 5: a mid-capacity prior generator (4) beats the smallest (1)?", "fid", "fid", "prior samples"),
    ("table5", "flexae-c4", "flexae"): ("Table 5: a mid-capacity prior generator (4) beats the largest (6)?", "fid", "fid", "prior samples"),
}


def second_half_questions(df, labels: dict[str, str], metric: str = "fid") -> dict[tuple, tuple[str, str, str, str]]:
    """The verdict rows of the lecture's second half, keyed as :data:`SECOND_HALF`, for the rows whose
    two variants are both in ``df`` (left and right of each row: "is left's score below right's?")."""
    name = METRICS.get(metric, metric)
    present = set(df.variant)
    rows = {}
    for key, (question, left_key, right_key, what) in SECOND_HALF.items():
        _, left, right = key
        if left not in present or right not in present:
            continue
        right_set = " (its GMM)" if right_key == "gmm_fid" else ""
        rows[key] = (question, f"{labels[left]} vs {labels[right]}{right_set}, {name}",
                     *lower(df, left, right, left_key, right_key, what, metric))
    return rows
