"""Which of the paper's findings hold on these results, in plain words.

Every finding compares our numbers with the paper's, quoted from the one constants table
(`paper.PAPER`). `findings(evidence)` returns them in the report's order.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from transfer_tf.analysis import separation
from transfer_tf.analysis.correlation import Correlations
from transfer_tf.analysis.paper import PAPER
from transfer_tf.analysis.tables import PROTOCOL_NAMES

# Fig. 2's level for a correlation, and the level of "significant" in our own statements.
SIGNIFICANCE = PAPER["not_worse_than_best_level"].value


@dataclasses.dataclass(frozen=True)
class Finding:
    """One of the paper's findings: `key` is stable, `finding` the sentence the report shows."""

    key: str
    finding: str
    paper: str
    ours: str
    holds: bool | None

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
    variants: dict
    feature_samples: list
    model_info: pd.DataFrame
    source: str = "ImageNet"


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def fmt_p(p: float | None) -> str:
    return "n/a" if p is None or not np.isfinite(p) else (f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}")


def verdict(holds: bool | None) -> str:
    return {True: "holds", False: "does not hold", None: "cannot be checked"}[holds]


def correlation_finding(protocol: str, fit: dict | None, reason: str | None,
                        source: str = "ImageNet") -> Finding:  # fmt: skip
    claim = PAPER[f"r_{protocol}"]
    name = f"{_capitalized(source)} accuracy predicts {PROTOCOL_NAMES[protocol]} accuracy"
    if fit is None:
        return Finding(f"r_{protocol}", name, claim.quote, reason, None)
    lo, hi = fit["r_ci"]
    holds = bool(fit["r"] > 0 and fit["p"] < SIGNIFICANCE)
    inside = "inside" if lo <= claim.value <= hi else "outside"
    text = (
        f"r between {source} accuracy and {PROTOCOL_NAMES[protocol]} transfer is {fit['r']:.2f} "
        f"(95% CI {lo:.2f} to {hi:.2f}, p = {fmt_p(fit['p'])}, Spearman rho = "
        f"{fit['spearman_rho']:.2f}, {fit['n_models']} models): the paper's finding "
        f"({claim.quote}, a significant positive correlation) {verdict(holds)}; the paper's r is "
        f"{inside} our CI."
    )
    return Finding(f"r_{protocol}", name, claim.quote, text, holds)


def scratch_correlation_finding(fits: dict, source: str = "ImageNet") -> Finding:
    name = f"Training from scratch correlates less with {source} accuracy than transfer does"
    scratch, lr, ft = PAPER["r_scratch"], PAPER["r_logreg"], PAPER["r_finetune"]
    paper = f"r = {scratch.value} vs {lr.value} / {ft.value}"
    transfer_rs = [fits[p]["r"] for p in ("logreg", "finetune") if fits.get(p)]
    if not (fits.get("scratch") and transfer_rs):
        text = "needs correlations for scratch and at least one transfer protocol"
        return Finding("r_scratch_lower", name, paper, text, None)
    r = fits["scratch"]["r"]
    holds = bool(r < min(transfer_rs))
    low, high = sorted((lr.value, ft.value))
    text = (f"scratch r = {r:.2f} (95% CI {fits['scratch']['r_ci'][0]:.2f} to "
            f"{fits['scratch']['r_ci'][1]:.2f}) vs {min(transfer_rs):.2f} for transfer: "
            f"the paper's finding ({scratch.value} vs {low}-{high}) {verdict(holds)}.")  # fmt: skip
    return Finding("r_scratch_lower", name, paper, text, holds)


def win_finding(key: str, counts: dict) -> Finding:
    """How often one protocol beats another over model x dataset pairs (Sec. 4.2, 4.5)."""
    winner, loser = counts["winner"], counts["loser"]
    claim = PAPER[key]
    paper_w, paper_n = claim.value
    name = f"{PROTOCOL_NAMES[winner].capitalize()} beats {PROTOCOL_NAMES[loser]}"
    paper = f"{paper_w} / {paper_n}"
    if counts["total"] == 0:
        text = f"no model x dataset pair has both {winner} and {loser} results"
        return Finding(key, name, paper, text, None)
    holds = counts["wins"] > counts["total"] / 2
    text = (f"{PROTOCOL_NAMES[winner]} beats {PROTOCOL_NAMES[loser]} in {counts['wins']} "
            f"of {counts['total']} model x dataset pairs: the paper's finding "
            f"({claim.quote}) {verdict(holds)}.")  # fmt: skip
    return Finding(key, name, paper, text, holds)


def wilcoxon_finding(tests: pd.DataFrame) -> Finding:
    """Fine-tuning significantly better than logistic regression per dataset (Sec. 4.2)."""
    claim, level = PAPER["finetune_significant_datasets"], PAPER["wilcoxon_level"]
    name = "Fine-tuning is significantly better than logistic regression per dataset (Wilcoxon)"
    paper = f"{claim.value[0]} / {claim.value[1]} datasets, {level.quote}"
    ft_lr = tests[tests["comparison"] == "finetune vs logreg"] if len(tests) else tests
    if not len(ft_lr):
        text = "needs fine-tuning and logistic regression results of 2 models on one dataset"
        return Finding("finetune_significant_datasets", name, paper, text, None)
    better = ft_lr[ft_lr["mean_logit_difference"] > 0]
    significant = better[better["wilcoxon_p"] < level.value]
    at_05 = better[better["wilcoxon_p"] < SIGNIFICANCE]
    min_p = float(ft_lr["wilcoxon_min_attainable_p"].min())
    text = (f"fine-tuning is better at {level.quote} on {len(significant)} and at p < "
            f"{SIGNIFICANCE} on {len(at_05)} of {len(ft_lr)} datasets (smallest attainable "
            f"Wilcoxon p with {int(ft_lr['n_models'].max())} models: {min_p:.2g})")  # fmt: skip
    if min_p >= level.value:
        holds = None
        text += f"; too few models to reach the paper's {level.quote}, so it cannot be checked."
    else:
        holds = len(significant) > len(ft_lr) / 2
        text += f": the paper's finding ({claim.quote}) {verdict(holds)}."
    return Finding("finetune_significant_datasets", name, paper, text, holds)


def convergence_finding(conv: dict, source: str = "ImageNet") -> Finding:
    claim = PAPER["convergence_speedup"]
    name = f"{_capitalized(source)} pretraining speeds up convergence (steps to 90% of max odds)"
    paper = f"{claim.quote} fewer steps"
    if not conv:
        text = "needs training histories of fine-tuning and scratch for the same model and dataset"
        return Finding("convergence_speedup", name, paper, text, None)
    holds = conv["speedup"] > 1
    text = (f"fine-tuning reaches 90% of its maximum odds in {conv['finetune_steps_geomean']:.0f} "
            f"steps vs {conv['scratch_steps_geomean']:.0f} from scratch (geometric means over "
            f"{conv['n_pairs']} model x dataset pairs), a {conv['speedup']:.1f}x speedup: the "
            f"paper's finding ({claim.quote}) {verdict(holds)}.")  # fmt: skip
    return Finding("convergence_speedup", name, paper, text, holds)


def subset_finding(gaps: pd.DataFrame) -> Finding:
    claim = PAPER["subset_gap"]
    name = "The benefit of pretraining shrinks as the training set grows (Fig. 9)"
    paper = "gap fades with size"
    if not (len(gaps) and "finetune_minus_scratch" in gaps.columns):
        text = "needs per_class subset results for fine-tuning and scratch"
        return Finding("subset_gap", name, paper, text, None)
    shrinks, total = 0, 0
    for _, rows in gaps.dropna(subset=["finetune_minus_scratch"]).groupby("dataset"):
        if rows["per_class"].nunique() >= 2:
            gap = rows.sort_values("per_class")["finetune_minus_scratch"]
            total += 1
            # A benefit at the smallest subset that is smaller at the largest: with no benefit
            # to begin with, nothing shrinks.
            shrinks += int(gap.iloc[0] > 0 and gap.iloc[-1] < gap.iloc[0])
    if not total:
        return Finding("subset_gap", name, paper, "needs at least 2 subset sizes per dataset", None)
    holds = shrinks > total / 2
    text = (f"fine-tuning beats scratch at the smallest subset and the gap (log odds) is "
            f"smaller at the largest subset on {shrinks} of {total} datasets: the paper's "
            f"finding ({claim.where}) {verdict(holds)}.")  # fmt: skip
    return Finding("subset_gap", name, paper, text, holds)


def _fair_minus_default(variants: pd.DataFrame) -> dict:
    diffs = {}
    for architecture, rows in variants.groupby("architecture"):
        by = rows.set_index("settings")["mean_logit"]
        if "fair" in by.index and "inception_default" in by.index:
            diffs[architecture] = float(by["fair"] - by["inception_default"])
    return diffs


def settings_finding(variants: dict) -> Finding:
    claim = PAPER["settings_effect"]
    name = "Fair training settings transfer better with fixed features, less so when fine-tuned"
    paper = "Figs. 3 and 5"
    empty = pd.DataFrame(columns=["architecture"])
    lr = _fair_minus_default(variants.get("logreg", empty))
    ft = _fair_minus_default(variants.get("finetune", empty))
    if not lr:
        text = "needs an architecture pretrained with both 'fair' and 'inception_default' settings"
        return Finding("settings_effect", name, paper, text, None)
    holds = all(d > 0 for d in lr.values())
    text = "fair minus Inception-default log odds with logistic regression: " + ", ".join(
        f"{a} {d:+.2f}" for a, d in lr.items()
    )
    common = sorted(set(lr) & set(ft))
    if common:
        holds = holds and all(abs(ft[a]) < abs(lr[a]) for a in common)
        text += "; with fine-tuning: " + ", ".join(f"{a} {ft[a]:+.2f}" for a in common)
    return Finding("settings_effect", name, paper, f"{text} ({claim.where}): {verdict(holds)}.",
                   holds)  # fmt: skip


def feature_space_finding(samples: list[dict], model_info: pd.DataFrame) -> Finding:
    name = "Regularized (Inception-default) training gives a less separable feature space (Fig. 4)"
    paper = "Fig. 4"
    pairs = separation.settings_pairs(samples, model_info)
    if not pairs:
        text = ("; ".join(f"{e['name']}: silhouette {e['silhouette']:.3f}" for e in samples[:6])
                or "no features given") + (
            ". Needs features of one architecture with both 'fair' and 'inception_default' "
            "settings on the same dataset."
        )  # fmt: skip
        return Finding("feature_space", name, paper, text, None)
    wins = sum(p["fair"]["silhouette"] > p["inception_default"]["silhouette"] for p in pairs)
    holds = bool(wins > len(pairs) / 2)
    text = ", ".join(
        f"{p['architecture']}/{p['dataset']} {p['fair']['silhouette']:.3f} vs "
        f"{p['inception_default']['silhouette']:.3f}"
        for p in pairs
    )
    ours = (f"silhouette (cosine) of fair vs Inception-default features: {text}; fair features "
            f"are more separable in {wins} of {len(pairs)} pairs: {verdict(holds)}.")  # fmt: skip
    return Finding("feature_space", name, paper, ours, holds)


def findings(evidence: Evidence) -> list[Finding]:
    """Every finding, in the report's order."""
    fits, reasons = evidence.correlations.fits, evidence.correlations.reasons
    out = [
        correlation_finding(p, fits.get(p), reasons.get(p), evidence.source)
        for p in ("logreg", "finetune")
    ]
    out.append(scratch_correlation_finding(fits, evidence.source))
    for key in ("finetune_beats_logreg", "finetune_beats_scratch"):
        out.append(win_finding(key, evidence.win_counts[key]))
    out.append(wilcoxon_finding(evidence.across_models))
    out.append(convergence_finding(evidence.convergence, evidence.source))
    out.append(subset_finding(evidence.subset_gaps))
    out.append(settings_finding(evidence.variants))
    out.append(feature_space_finding(evidence.feature_samples, evidence.model_info))
    return out
