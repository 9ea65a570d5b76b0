"""Which of the paper's findings hold on these results, in plain words.

Every finding compares our numbers with the paper's, quoted from the one constants table
(`paper.PAPER`), and ends in one of three verdicts, each earned by the evidence:

- "holds": our interval lies on the claimed side of "no effect" and reaches the paper's value;
- "does not hold": our interval lies on the wrong side of "no effect", or below the paper's value;
- "inconclusive": our interval includes "no effect" (or the counts cannot decide);

and "cannot be checked" when the results lack what the finding needs (the text says what).
`findings(evidence)` returns them in the report's order.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from transfer_tf.analysis import separation, stats
from transfer_tf.analysis.correlation import Correlations
from transfer_tf.analysis.paper import PAPER
from transfer_tf.analysis.tables import PROTOCOL_NAMES

HOLDS, FAILS, INCONCLUSIVE, UNCHECKED = (
    "holds",
    "does not hold",
    "inconclusive",
    "cannot be checked",
)
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, UNCHECKED)
CONFIDENCE = PAPER["ci_level"].value
SIGNIFICANCE = PAPER["not_worse_than_best_level"].value


@dataclasses.dataclass(frozen=True)
class Finding:
    """One of the paper's findings: `key` is stable, `finding` the sentence the report shows."""

    key: str
    finding: str
    paper: str
    ours: str
    verdict: str

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Evidence:
    """What the findings are computed from (all of it computed by the report beforehand)."""

    correlations: Correlations
    win_counts: dict
    across_models: pd.DataFrame
    convergence: dict
    subset_gaps: pd.DataFrame
    settings_effects: pd.DataFrame
    feature_samples: list
    model_info: pd.DataFrame
    source: str = "ImageNet"


def interval_verdict(low: float, high: float, null: float, paper_value: float) -> str:
    """The rule of every finding with an interval (r, a win rate, a speedup): inconclusive when
    it includes the null; holds when above the null and reaching the paper's value; else fails."""
    if low <= null <= high:
        return INCONCLUSIVE
    return HOLDS if low > null and high >= paper_value else FAILS


def where_is(value: float, low: float, high: float) -> str:
    """Where the paper's value lies relative to our interval."""
    return "inside" if low <= value <= high else ("above" if value > high else "below")


def interval_conclusion(
    paper_text: str, paper_value: float, low: float, high: float, null: float, null_words: str
) -> tuple[str, str]:
    """(verdict, the sentence's end) of `interval_verdict`, saying why."""
    verdict = interval_verdict(low, high, null, paper_value)
    text = f"the paper's {paper_text} is {where_is(paper_value, low, high)} our CI"
    if verdict == INCONCLUSIVE:
        text += f", which includes {null_words}"
    return verdict, f"{text}: {verdict}."


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def fmt_p(p: float | None) -> str:
    return "n/a" if p is None or not np.isfinite(p) else (f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}")


def _ci(low: float, high: float, digits: int = 2) -> str:
    return f"{CONFIDENCE:.0%} CI {low:.{digits}f} to {high:.{digits}f}"


def correlation_finding(
    protocol: str, fit: dict | None, reason: str | None, source: str = "ImageNet"
) -> Finding:
    """r of source accuracy against transfer accuracy (Sec. 4.1, 4.2): CI vs 0 and the paper's r."""
    claim = PAPER[f"r_{protocol}"]
    name = f"{_capitalized(source)} accuracy predicts {PROTOCOL_NAMES[protocol]} accuracy"
    paper = f"{claim.quote} ({claim.where})"
    if fit is None:
        return Finding(f"r_{protocol}", name, paper, reason, UNCHECKED)
    lo, hi = fit["r_ci"]
    verdict, conclusion = interval_conclusion(
        claim.quote, claim.value, lo, hi, 0.0, "r = 0 (no correlation)"
    )
    text = (
        f"r between {source} accuracy and {PROTOCOL_NAMES[protocol]} transfer is {fit['r']:.2f} "
        f"({_ci(lo, hi)}, p = {fmt_p(fit['p'])}, Spearman rho = {fit['spearman_rho']:.2f}, "
        f"{fit['n_models']} models); {conclusion}"
    )
    return Finding(f"r_{protocol}", name, paper, text, verdict)


def _lower_than(r_value: float, fit: dict) -> str:
    """Is `r_value` above the CI of `fit`'s r (holds), below it (fails) or inside (inconclusive)?"""
    lo, hi = fit["r_ci"]
    return HOLDS if r_value > hi else (FAILS if r_value < lo else INCONCLUSIVE)


def scratch_correlation_finding(fits: dict, source: str = "ImageNet") -> Finding:
    """Scratch r below transfer r (Sec. 4.3): the smaller transfer r against scratch's CI."""
    name = f"Training from scratch correlates less with {source} accuracy than transfer does"
    scratch, lr, ft = PAPER["r_scratch"], PAPER["r_logreg"], PAPER["r_finetune"]
    paper = f"r = {scratch.value} vs {lr.value} / {ft.value} ({scratch.where})"
    transfer_rs = [fits[p]["r"] for p in ("logreg", "finetune") if fits.get(p)]
    if not (fits.get("scratch") and transfer_rs):
        text = "needs correlations for scratch and at least one transfer protocol"
        return Finding("r_scratch_lower", name, paper, text, UNCHECKED)
    fit, transfer_r = fits["scratch"], min(transfer_rs)
    verdict = _lower_than(transfer_r, fit)
    text = (
        f"scratch r = {fit['r']:.2f} ({_ci(*fit['r_ci'])}) vs {transfer_r:.2f} for transfer, "
        f"which is {where_is(transfer_r, *fit['r_ci'])} scratch's CI: {verdict}."
    )
    return Finding("r_scratch_lower", name, paper, text, verdict)


def scratch_size_finding(by_size: dict, source: str = "ImageNet") -> Finding:
    """Sec. 4.3: scratch r = 0.29 on the 7 datasets under 10,000 training examples, 0.86 on the
    5 larger ones: the large-dataset r against the small-dataset CI."""
    small, large = PAPER["r_scratch_small"], PAPER["r_scratch_large"]
    size = PAPER["small_dataset_size"]
    name = (
        f"Training from scratch correlates weakly with {source} accuracy on small datasets, "
        f"strongly on large ones (split at {size.quote})"
    )
    paper = f"{small.quote}; {large.quote} ({small.where})"
    if not by_size:
        return Finding("r_scratch_by_size", name, paper, "needs a scratch correlation", UNCHECKED)
    missing = [
        f"{part}: {by_size[part]['reason']}"
        for part in ("small", "large")
        if by_size[part]["fit"] is None
    ]
    unknown = (
        f"; datasets without a registry size, left out: {', '.join(by_size['unknown'])}"
        if by_size["unknown"]
        else ""
    )
    if missing:
        return Finding("r_scratch_by_size", name, paper, "; ".join(missing) + unknown, UNCHECKED)
    fs, fl = by_size["small"]["fit"], by_size["large"]["fit"]
    verdict = _lower_than(fl["r"], fs)
    text = (
        f"r = {fs['r']:.2f} ({_ci(*fs['r_ci'])}) on {len(by_size['small']['datasets'])} "
        f"small and {fl['r']:.2f} ({_ci(*fl['r_ci'])}) on {len(by_size['large']['datasets'])} "
        f"large datasets; the large-dataset r is {where_is(fl['r'], *fs['r_ci'])} the "
        f"small-dataset CI{unknown}: {verdict}."
    )
    return Finding("r_scratch_by_size", name, paper, text, verdict)


def win_finding(key: str, counts: dict) -> Finding:
    """How often one protocol beats another over model x dataset pairs (Sec. 4.2, 4.5): the win
    rate's exact binomial CI against 1/2 and the paper's rate (ties are not wins)."""
    winner, loser = counts["winner"], counts["loser"]
    claim = PAPER[key]
    name = f"{PROTOCOL_NAMES[winner].capitalize()} beats {PROTOCOL_NAMES[loser]}"
    paper = f"{claim.quote} ({claim.fraction:.1%}; {claim.where})"
    if counts["total"] == 0:
        text = f"no model x dataset pair has both {winner} and {loser} results"
        return Finding(key, name, paper, text, UNCHECKED)
    rate = stats.binomial_proportion(counts["wins"], counts["total"], CONFIDENCE)
    verdict, conclusion = interval_conclusion(
        f"{claim.fraction:.1%}",
        claim.fraction,
        rate.low,
        rate.high,
        0.5,
        "50% (neither protocol wins more often)",
    )
    text = (
        f"{PROTOCOL_NAMES[winner]} beats {PROTOCOL_NAMES[loser]} in {counts['wins']} of "
        f"{counts['total']} model x dataset pairs ({rate.estimate:.1%}, exact binomial "
        f"{_ci(rate.low * 100, rate.high * 100, 1)}%); {conclusion}"
    )
    return Finding(key, name, paper, text, verdict)


def wilcoxon_finding(tests: pd.DataFrame) -> Finding:
    """Fine-tuning significantly better than logistic regression per dataset (Sec. 4.2): the
    count of datasets at the paper's level against its 11 of 12, over the datasets where the
    Wilcoxon test can reach that level with the models there."""
    claim, level = PAPER["finetune_significant_datasets"], PAPER["wilcoxon_level"]
    name = "Fine-tuning is significantly better than logistic regression per dataset (Wilcoxon)"
    paper = f"{claim.quote} datasets, {level.quote} ({claim.where})"
    ft_lr = tests[tests["comparison"] == "finetune vs logreg"] if len(tests) else tests
    if not len(ft_lr):
        text = "needs fine-tuning and logistic regression results of 2 models on one dataset"
        return Finding("finetune_significant_datasets", name, paper, text, UNCHECKED)
    testable = ft_lr[ft_lr["wilcoxon_min_attainable_p"] < level.value]
    significant = testable[
        (testable["wilcoxon_p"] < level.value) & (testable["mean_logit_difference"] > 0)
    ]
    needed = next(n for n in range(1, 64) if stats.wilcoxon_min_attainable_p(n) < level.value)
    text = (
        f"fine-tuning is better at {level.quote} on {len(significant)} of the "
        f"{len(testable)} datasets where {level.quote} is attainable ({len(ft_lr)} datasets; "
        f"the exact Wilcoxon test needs {needed} models to reach it, "
        f"{int(ft_lr['n_models'].max())} at most here)"
    )
    if testable.empty:
        return Finding(
            "finetune_significant_datasets",
            name,
            paper,
            text + f": too few models to test the paper's {level.quote}, {INCONCLUSIVE}.",
            INCONCLUSIVE,
        )
    k, n = claim.value
    verdict = HOLDS if len(significant) * n >= k * len(testable) else FAILS
    text += f"; the paper's share is {claim.quote}: {verdict}."
    return Finding("finetune_significant_datasets", name, paper, text, verdict)


def convergence_finding(conv: dict, source: str = "ImageNet") -> Finding:
    """Pretraining speeds up convergence (Sec. 4.6): the geometric-mean speedup's CI over model x
    dataset pairs against 1 and the paper's 17x."""
    claim = PAPER["convergence_speedup"]
    fraction = PAPER["convergence_fraction"]
    name = (
        f"{_capitalized(source)} pretraining speeds up convergence (steps to "
        f"{fraction.value:.0%} of max odds)"
    )
    paper = f"{claim.quote} fewer steps ({claim.where})"
    if not conv:
        text = "needs training histories of fine-tuning and scratch for the same model and dataset"
        return Finding("convergence_speedup", name, paper, text, UNCHECKED)
    text = (
        f"fine-tuning reaches {fraction.quote} in {conv['finetune_steps_geomean']:.0f} "
        f"steps vs {conv['scratch_steps_geomean']:.0f} from scratch (geometric means over "
        f"{conv['n_pairs']} model x dataset pairs), a {conv['speedup']:.1f}x speedup"
    )
    if conv["n_pairs"] < 2:
        return Finding(
            "convergence_speedup",
            name,
            paper,
            f"{text}; one pair has no spread to give a CI: {INCONCLUSIVE}.",
            INCONCLUSIVE,
        )
    lo, hi = conv["speedup_ci"]
    verdict, conclusion = interval_conclusion(
        claim.quote, claim.value, lo, hi, 1.0, "1x (no speedup)"
    )
    text += f" ({_ci(lo, hi, 1)}); {conclusion}"
    return Finding("convergence_speedup", name, paper, text, verdict)


def _majority(count: int, total: int) -> str:
    return HOLDS if 2 * count > total else (FAILS if 2 * count < total else INCONCLUSIVE)


def subset_finding(gaps: pd.DataFrame) -> Finding:
    """Fig. 9: per dataset, a fine-tune - scratch gap at the smallest subset that is smaller at
    the largest (the means over the subsets of each size); holds on a majority of datasets."""
    claim = PAPER["subset_gap"]
    name = "The benefit of pretraining shrinks as the training set grows (Fig. 9)"
    paper = f"{claim.quote} ({claim.where})"
    if not (len(gaps) and "finetune_minus_scratch" in gaps.columns):
        text = "needs per_class subset results for fine-tuning and scratch"
        return Finding("subset_gap", name, paper, text, UNCHECKED)
    shrinks, total = 0, 0
    for _, rows in gaps.dropna(subset=["finetune_minus_scratch"]).groupby("dataset"):
        if rows["per_class"].nunique() >= 2:
            gap = rows.sort_values("per_class")["finetune_minus_scratch"]
            total += 1
            # A benefit at the smallest subset that is smaller at the largest: with no benefit
            # to begin with, nothing shrinks.
            shrinks += int(gap.iloc[0] > 0 and gap.iloc[-1] < gap.iloc[0])
    if not total:
        return Finding(
            "subset_gap", name, paper, "needs at least 2 subset sizes per dataset", UNCHECKED
        )
    verdict = _majority(shrinks, total)
    n = int(gaps["n_subsets"].min()) if "n_subsets" in gaps.columns else 1
    subsets = f"means of {n} subsets per size" if n > 1 else "one subset per size, no error bars"
    text = (
        f"fine-tuning beats scratch at the smallest subset and the gap (log odds) is "
        f"smaller at the largest subset on {shrinks} of {total} datasets ({subsets}): "
        f"{verdict}."
    )
    return Finding("subset_gap", name, paper, text, verdict)


def _settings_call(lr: pd.Series, ft: pd.Series | None) -> str:
    """One architecture: does it agree with Figs. 3 / 5 (fixed features clearly better with fair
    settings, fine-tuning less affected), disagree, or not decide?"""
    clear = lr["n_datasets"] >= 2 and lr["t_p"] < SIGNIFICANCE
    if not clear:
        return INCONCLUSIVE
    if lr["fair_minus_default"] < 0:
        return FAILS
    if ft is not None and abs(ft["fair_minus_default"]) >= lr["fair_minus_default"]:
        return FAILS
    return HOLDS


def _majority_verdict(calls: list[str]) -> str:
    if 2 * calls.count(HOLDS) > len(calls):
        return HOLDS
    return FAILS if 2 * calls.count(FAILS) > len(calls) else INCONCLUSIVE


def settings_finding(effects: pd.DataFrame) -> Finding:
    """Figs. 3 / 5, per architecture: fair minus Inception-default log odds with logistic
    regression, clearly above 0 (paired t-test across datasets, p < 0.05), and smaller in size
    with fine-tuning. Holds / fails when most architectures agree / disagree."""
    claim = PAPER["settings_effect"]
    name = "Fair training settings transfer better with fixed features, less so when fine-tuned"
    paper = f"{claim.quote} ({claim.where})"
    lr = effects[effects["protocol"] == "logreg"].set_index("architecture")
    ft = effects[effects["protocol"] == "finetune"].set_index("architecture")
    if lr.empty:
        text = "needs an architecture pretrained with both 'fair' and 'inception_default' settings"
        return Finding("settings_effect", name, paper, text, UNCHECKED)
    calls, parts = [], []
    for architecture, row in lr.iterrows():
        ft_row = ft.loc[architecture] if architecture in ft.index else None
        calls.append(_settings_call(row, ft_row))
        part = (
            f"{architecture} {row['fair_minus_default']:+.2f} with logistic regression "
            f"(p = {fmt_p(row['t_p'])} over {row['n_datasets']} dataset(s))"
        )
        if ft_row is not None:
            part += f", {ft_row['fair_minus_default']:+.2f} fine-tuned"
        parts.append(f"{part}, {calls[-1]}")
    verdict = _majority_verdict(calls)
    text = (
        f"fair minus Inception-default log odds (a clear effect needs p < {SIGNIFICANCE} "
        f"over 2+ datasets): {'; '.join(parts)}; {calls.count(HOLDS)} of {len(calls)} "
        f"architectures agree: {verdict}."
    )
    return Finding("settings_effect", name, paper, text, verdict)


def feature_space_finding(samples: list[dict], model_info: pd.DataFrame) -> Finding:
    """Fig. 4 is a picture; our number is the silhouette of fair vs Inception-default features of
    one architecture on one dataset. A pair agrees when fair features are more separable with
    p < 0.05 (`separation.separation_test`); holds / fails when most pairs agree / disagree."""
    claim = PAPER["feature_space"]
    name = "Regularized (Inception-default) training gives a less separable feature space (Fig. 4)"
    paper = f"{claim.quote} ({claim.where})"
    pairs = separation.settings_pairs(samples, model_info)
    if not pairs:
        text = (
            "; ".join(f"{e['name']}: our silhouette {e['silhouette']:.3f}" for e in samples[:6])
            or "no features given"
        ) + (
            ". Needs features of one architecture with both 'fair' and 'inception_default' "
            "settings on the same dataset."
        )
        return Finding("feature_space", name, paper, text, UNCHECKED)
    calls, parts = [], []
    for pair in pairs:
        fair, default = pair["fair"]["silhouette"], pair["inception_default"]["silhouette"]
        p = separation.separation_test(pair["fair"], pair["inception_default"])
        calls.append(INCONCLUSIVE if p >= SIGNIFICANCE else (HOLDS if fair > default else FAILS))
        parts.append(
            f"{pair['architecture']}/{pair['dataset']} {fair:.3f} vs {default:.3f} "
            f"(p = {fmt_p(p)}): {calls[-1]}"
        )
    verdict = _majority_verdict(calls)
    ours = (
        f"our measure, not the paper's (Fig. 4 is a t-SNE picture): mean silhouette (cosine) "
        f"of fair vs Inception-default features, {'; '.join(parts)}; fair features are "
        f"clearly more separable in {calls.count(HOLDS)} of {len(pairs)} pairs: {verdict}."
    )
    return Finding("feature_space", name, paper, ours, verdict)


def findings(evidence: Evidence) -> list[Finding]:
    """Every finding, in the report's order."""
    corr = evidence.correlations
    out = [
        correlation_finding(p, corr.fits.get(p), corr.reasons.get(p), evidence.source)
        for p in ("logreg", "finetune")
    ]
    out.append(scratch_correlation_finding(corr.fits, evidence.source))
    out.append(scratch_size_finding(corr.by_size, evidence.source))
    for key in ("finetune_beats_logreg", "finetune_beats_scratch"):
        out.append(win_finding(key, evidence.win_counts[key]))
    out.append(wilcoxon_finding(evidence.across_models))
    out.append(convergence_finding(evidence.convergence, evidence.source))
    out.append(subset_finding(evidence.subset_gaps))
    out.append(settings_finding(evidence.settings_effects))
    out.append(feature_space_finding(evidence.feature_samples, evidence.model_info))
    return out
