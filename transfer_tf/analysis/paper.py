"""The paper's numbers that the report compares against, each with where the paper states it.

One table: `findings.py` and the report quote the paper only through `PAPER`, so a number in
the report can be checked against one line here, and this line against the paper (Kornblith,
Shlens, Le 2019, "Do Better ImageNet Models Transfer Better?", main text).
"""

from __future__ import annotations

import dataclasses

import pandas as pd


@dataclasses.dataclass(frozen=True)
class PaperNumber:
    """One number (or a count `(k, n)`) of the paper; `quote` is how the report prints it."""

    value: float | tuple[int, int] | None
    quote: str
    where: str

    @property
    def fraction(self) -> float:
        """k / n of a count."""
        k, n = self.value
        return k / n


PAPER = {
    "r_logreg": PaperNumber(0.99, "r = 0.99", "Sec. 4.1, Fig. 2 (top)"),
    "r_finetune": PaperNumber(0.96, "r = 0.96", "Sec. 4.2, Fig. 2 (middle)"),
    "r_scratch": PaperNumber(0.55, "r = 0.55", "Sec. 4.3, Fig. 2 (bottom)"),
    "r_scratch_small": PaperNumber(
        0.29,
        "r = 0.29 on the 7 datasets with < 10,000 training examples, not significant",
        "Sec. 4.3",
    ),
    "r_scratch_large": PaperNumber(0.86, "r = 0.86 on the 5 larger datasets", "Sec. 4.3"),
    "small_dataset_size": PaperNumber(
        10_000,
        "10,000 training examples",
        "Sec. 4.3: 'the 7 datasets with <10,000 examples' and the 5 larger ones; by Table 1's "
        "training sizes that is Stanford Cars (8,144) down to Flowers (2,040) vs SUN397 (19,850) "
        "up to Food-101 (75,750)",
    ),
    "finetune_beats_logreg": PaperNumber((179, 192), "179 of 192", "Sec. 4.2, Fig. 6"),
    "finetune_beats_scratch": PaperNumber((189, 192), "189 of 192", "Sec. 4.5, Figs. 6, 7"),
    "finetune_significant_datasets": PaperNumber((11, 12), "11 of 12", "Sec. 4.2, Fig. 6"),
    "wilcoxon_level": PaperNumber(0.01, "p < 0.01", "Sec. 4.2 (Wilcoxon signed-rank test)"),
    "ci_level": PaperNumber(0.95, "95% bootstrap confidence interval", "Fig. 2 (caption)"),
    "not_worse_than_best_level": PaperNumber(
        0.05, "p > 0.05", "Fig. 2 (right: models not different from the best, t-test)"
    ),
    "convergence_fraction": PaperNumber(
        0.9, "90% of the maximum odds", "Sec. 4.6 (steps to reach it measure convergence)"
    ),
    "convergence_speedup": PaperNumber(
        17.0, "17x", "Sec. 4.6, Fig. 8 (1151 vs 19531 steps to 90% of the maximum odds)"
    ),
    "settings_effect": PaperNumber(
        None,
        "regularizing ImageNet training hurts fixed features, much less so fine-tuning",
        "Sec. 4.1, 4.2, Figs. 3, 5",
    ),
    "tsne_classes": PaperNumber(10, "10 classes from the test set", "Fig. 4 (caption)"),
    "feature_space": PaperNumber(
        None,
        "t-SNE of Inception v4 features of 10 Oxford Flowers classes: the Inception-default "
        "settings give a less separable feature space (a picture, no number)",
        "Sec. 4.1, Fig. 4",
    ),
    "subset_gap": PaperNumber(
        None, "the benefit of pretraining fades as the training set grows", "Sec. 4.7, Fig. 9"
    ),
}


def paper_table() -> pd.DataFrame:
    """The constants as a table for the report: key, the paper's words, where."""
    return pd.DataFrame(
        [
            {"key": key, "paper": number.quote, "where": number.where}
            for key, number in PAPER.items()
        ]
    )
