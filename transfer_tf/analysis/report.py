"""One report for a study: CSV tables, the paper's figures, report.html / report.md, and in plain
words which of the paper's findings hold on these results.

`write_report(results_df, model_table_df, output_dir)` is the library entry point (the
mini-study calls it; `transfer-analyze` wraps it). It only orchestrates: the numbers come from
`tables`, `correlation`, `comparisons`, `pairwise` and `separation`, the verdicts from
`findings`, the text from `render`. A figure or test the results cannot support is skipped and
the report says why.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd

from transfer_tf.analysis import (
    comparisons,
    correlation,
    figures,
    findings,
    pairwise,
    paper,
    render,
    separation,
    tables,
)
from transfer_tf.analysis import predictors as predictor_analysis
from transfer_tf.analysis.paper import PAPER
from transfer_tf.analysis.render import Bullet, Section
from transfer_tf.analysis.tables import PROTOCOL_NAMES
from transfer_tf.data import registry

TITLE = "Do better ImageNet models transfer better? — study report"
WIN_COMPARISONS = (("finetune", "logreg"), ("finetune", "scratch"), ("logreg", "scratch"))
_VERDICT_CLASS = {findings.HOLDS: "holds", findings.FAILS: "fails"}
# Table 1's training-set sizes (train + val) from the registry, for the split of Sec. 4.3.
TRAIN_SIZES = {name: spec.train_size for name, spec in registry.DATASETS.items()}


@dataclasses.dataclass
class _Output:
    """The files of one report: CSV tables and figures as they are written, and what was skipped."""

    output_dir: str
    tables: dict = dataclasses.field(default_factory=dict)
    figures: dict = dataclasses.field(default_factory=dict)
    skipped: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)

    def table(self, name: str, frame: pd.DataFrame) -> pd.DataFrame:
        path = os.path.join(self.output_dir, f"{name}.csv")
        frame.to_csv(path, index=False)
        self.tables[name] = path
        return frame

    def figure(self, name: str, draw, *args) -> None:
        path = os.path.join(self.output_dir, "figures", f"{name}.png")
        try:
            self.figures[name] = draw(*args, path)
        except figures.FigureSkipped as e:
            self.skipped[name] = str(e)


def _final_tables(out: _Output, results_df: pd.DataFrame, model_table: pd.DataFrame):
    best = tables.final_metrics(results_df, model_table)
    if best.empty:
        raise ValueError(
            "no final cells with a test_metric in the results: run the sweeps' final stage "
            "(stage == 'final') before transfer-analyze."
        )
    out.table("best_test_metric", best.drop(columns="predictions_path"))
    wide = best.pivot_table(index="model", columns=["protocol", "dataset"], values="test_metric")
    wide.columns = [f"{p}/{d}" for p, d in wide.columns]
    out.table("best_test_metric_wide", wide.reset_index())
    unknown = sorted(set(best["model"]) - set(model_table["model"]))
    if unknown:
        out.notes.append(
            f"models without a source accuracy in the model table (left out of "
            f"correlations): {', '.join(unknown)}"
        )
    several = best[best["n_final_configs"] > 1]
    if len(several):
        out.notes.append(
            f"{len(several)} model x dataset x protocol have several final cells; the one whose "
            "grid cells reached the best validation metric was kept (selected_by, "
            "selection_val_metric in best_test_metric.csv), never the best test metric"
        )
    return best


def _correlation_part(out: _Output, best: pd.DataFrame, num_bootstrap: int, seed: int):
    """Figs. 1 and 2 and the correlations table."""
    threshold = PAPER["small_dataset_size"].value
    corr = correlation.correlate_protocols(best, num_bootstrap, seed, TRAIN_SIZES, threshold)
    for protocol in PROTOCOL_NAMES:
        fit = corr.fits.get(protocol)
        if fit is None:
            out.skipped[f"fig2_{protocol}"] = corr.reasons[protocol]
        else:
            summary = corr.summaries[protocol]
            out.figure(f"fig2_{protocol}", figures.transfer_vs_source, summary, fit, protocol)
            out.table(f"model_means_{protocol}", summary)
        if (best["protocol"] == protocol).any():
            out.figure(
                f"fig2_{protocol}_datasets", figures.transfer_vs_source_per_dataset, best, protocol
            )
    fitted = {p: s for p, s in corr.summaries.items() if corr.fits.get(p)}
    out.figure("fig1", figures.correlation_overview, fitted, corr.fits)
    out.table("correlations", correlation.correlation_rows(corr.by_group))
    return corr


def _comparison_part(out: _Output, best, results_df, permutation_samples: int, seed: int) -> dict:
    """Win counts, paired tests, and Figs. 3 and 5-9 with their tables."""
    win = {f"{a}_beats_{b}": tables.win_counts(best, a, b) for a, b in WIN_COMPARISONS}
    out.table(
        "win_counts",
        pd.DataFrame(
            [
                {**_win_row(w), "fraction": w["wins"] / w["total"] if w["total"] else np.nan}
                for w in win.values()
            ]
        ),
    )
    across = out.table(
        "across_models_tests",
        pd.concat(
            [comparisons.across_model_tests(best, "finetune", a) for a in ("logreg", "scratch")],
            ignore_index=True,
        ),
    )
    pair_tests = out.table(
        "top_model_tests", pairwise.top_model_tests(best, permutation_samples, seed)
    )
    bars, points = comparisons.protocol_comparison_tables(best)
    out.table("protocol_comparison", bars)
    out.figure("fig6_protocols", figures.protocol_comparison, bars, points)
    pairs = out.table("scratch_vs_finetune", comparisons.scratch_finetune_pairs(best))
    out.figure("fig7_scratch_vs_finetune", figures.scratch_vs_finetune, pairs)
    histories = tables.training_histories(results_df, best["cell_id"])
    steps, convergence = comparisons.convergence_tables(
        histories, PAPER["convergence_fraction"].value
    )
    out.table("convergence", steps)
    out.figure("fig8_convergence", figures.convergence, histories, steps)
    subsets = comparisons.subset_summary(tables.subset_results(results_df))
    gaps = out.table("subset_size", comparisons.subset_gap_table(subsets))
    out.figure("fig9_subset_size", figures.subset_size, subsets)
    for protocol, number in (("logreg", 3), ("finetune", 5)):
        variants = out.table(
            f"settings_variants_{protocol}", comparisons.settings_variant_table(best, protocol)
        )
        out.figure(
            f"fig{number}_settings_{protocol}",
            figures.settings_variants,
            variants,
            protocol,
            number,
        )
    effects = out.table(
        "settings_effects",
        pd.concat(
            [comparisons.settings_effect_tests(best, p) for p in ("logreg", "finetune")],
            ignore_index=True,
        ),
    )
    return {
        "win_counts": win,
        "across_models": across,
        "pair_tests": pair_tests,
        "protocol_bars": bars,
        "convergence_steps": steps,
        "convergence": convergence,
        "subset_gaps": gaps,
        "settings_effects": effects,
    }


def _win_row(counts: dict) -> dict:
    return {k: v for k, v in counts.items() if not k.startswith("per_dataset")}


def _feature_part(out: _Output, features_dir, seed, model_info, tsne_max_iter):
    """Fig. 4: t-SNE panels and our silhouette numbers."""
    if not features_dir:
        out.skipped["fig4_tsne"] = "no --features_dir given"
        return [], []
    samples, embeddings, problems = separation.feature_embeddings(
        features_dir, seed, model_info, tsne_max_iter
    )
    out.figure("fig4_tsne", figures.tsne_embeddings, embeddings)
    out.figure("fig4_class_separation", figures.class_separation, samples)
    out.table("class_separation", separation.separation_table(samples))
    return samples, problems


def _predictor_part(out: _Output, rows, best, model_table, results_df, num_bootstrap, seed):
    """Beyond the paper (issue 19): cheap transfer predictors against the measured transfer."""
    if rows.empty:
        return []
    scores = out.table("predictor_scores", predictor_analysis.predictor_scores(rows))
    agreement = out.table(
        "predictor_agreement",
        predictor_analysis.agreement_table(
            scores, best, model_table, num_bootstrap=num_bootstrap, seed=seed
        ),
    )
    summary = out.table("predictor_summary", predictor_analysis.summary_table(agreement))
    cost = out.table("predictor_cost", predictor_analysis.cost_table(scores, results_df))
    source = figures.source_name(model_table)
    out.figure("predictors_vs_transfer", predictor_analysis.agreement_figure, agreement, source)
    return [
        Section(
            "Beyond the paper: cheap transfer predictors",
            predictor_analysis.section_text(source, num_bootstrap),
            table=summary,
        ),
        Section("Cost of the predictors", predictor_analysis.cost_text(), table=cost),
    ]


def _source(best: pd.DataFrame, primary: str | None) -> str:
    """What the models' top-1 was measured on, for the text (ImageNet or the named source)."""
    rows = best[best["source_logit"].notna()]
    if primary is not None:
        rows = rows[rows["settings"].astype(str) == primary]
    return figures.source_name(rows)


VERDICT_RULE = (
    "Each verdict is earned: a finding with an interval (r, a win rate, a speedup) holds when "
    "the interval lies on the claimed side of 'no effect' (r = 0, win rate 1/2, speedup 1) and "
    "reaches the paper's value, does not hold when it lies on the other side or wholly below "
    "the paper's value, and is inconclusive when it includes 'no effect'. Counts (Wilcoxon "
    "datasets, Fig. 9 datasets, Fig. 4 pairs) are compared with the paper's share. 'Cannot be "
    "checked': the results lack what the finding needs."
)


def _correlation_text(source: str, corr, num_bootstrap: int) -> str:
    size = PAPER["small_dataset_size"]
    return (
        f"Pearson r of logit {source} top-1 against the mean logit transfer accuracy over a "
        f"complete set of datasets; {PAPER['ci_level'].value:.0%} CI and regression-line band "
        f"from {num_bootstrap} bootstrap resamples of models. Headline group: "
        f"{corr.primary or 'all models'}. Scratch is also split by training-set size: 'small' "
        f"datasets have fewer than {size.quote} (the registry's Table 1 sizes, train + val), "
        f"as in {size.where}."
    )


def _pairwise_text(permutation_samples: int) -> str:
    return (
        "The two models with the highest test metric per dataset x protocol, tested on the "
        "dataset's metric from the per-example predictions files: top-1 by the exact McNemar "
        "test (p_value; permutation_p beside it), mean per-class accuracy by a paired "
        "permutation test of its difference (mcnemar_p on top-1 correctness only for "
        "comparison), 11-point mAP by a paired permutation test of its difference; "
        f"{permutation_samples} random swaps. difference = metric of a minus metric of b."
    )


def _sections(out: _Output, parts: dict, found: list, corr, source: str, settings: dict):
    """The report's sections, shared by report.md and report.html."""
    rows = correlation.correlation_rows(corr.by_group)
    fraction = PAPER["convergence_fraction"]
    sections = [
        Section(
            "Which of the paper's findings hold",
            VERDICT_RULE,
            bullets=tuple(
                Bullet(f.ours, f.finding, f.verdict, _VERDICT_CLASS.get(f.verdict, "unknown"))
                for f in found
            ),
        ),
        Section("The paper's numbers compared against", table=paper.paper_table()),
        Section(
            f"Correlation with {source} accuracy (Figs. 1, 2)",
            _correlation_text(source, corr, settings["num_bootstrap"]),
            table=rows.drop(columns="key") if len(rows) else rows,
        ),
        Section(
            "Win counts",
            "Model x dataset pairs where one protocol's test metric is higher.",
            table=pd.DataFrame([_win_row(w) for w in parts["win_counts"].values()]),
        ),
        Section(
            "Across models, per dataset (Wilcoxon signed-rank, paired t-test)",
            "Paired by model on logit test accuracy; two-sided.",
            table=parts["across_models"],
        ),
        Section(
            "Between the two best models per dataset, on the dataset's metric",
            _pairwise_text(settings["permutation_samples"]),
            table=parts["pair_tests"],
        ),
        Section(
            "Protocol comparison (Fig. 6)",
            "Mean log odds over models, Morey SE.",
            table=parts["protocol_bars"],
        ),
        Section(
            "Convergence (Fig. 8)",
            f"Steps to reach {fraction.quote} of each run.",
            table=parts["convergence_steps"],
        ),
        Section(
            "Training-subset size (Fig. 9)",
            "Mean log odds per protocol over the random subsets of each size (each subset "
            "averaged over models), ± standard error over the subsets (`<protocol>_se`).",
            table=parts["subset_gaps"],
        ),
        Section(
            "Class separation of features (our silhouette score; Fig. 4 is a picture)",
            "; ".join(parts["feature_problems"]),
            table=separation.separation_table(parts["feature_samples"]),
        ),
        *parts["predictor_sections"],
        Section("Figures", figures=tuple(out.figures.items())),
    ]
    if out.skipped:
        sections.append(
            Section(
                "Skipped",
                bullets=tuple(Bullet(f"{name}: {why}") for name, why in out.skipped.items()),
            )
        )
    sections.append(Section("Notes", bullets=tuple(Bullet(n) for n in out.notes)))
    return sections


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if not np.isfinite(value) else float(value)
    return value


def _headline(out: _Output, corr, win: dict, convergence: dict, found: list) -> dict:
    return _jsonable(
        {
            "output_dir": out.output_dir,
            "report_html": os.path.join(out.output_dir, "report.html"),
            "report_md": os.path.join(out.output_dir, "report.md"),
            "primary_settings": corr.primary,
            "correlations": {
                key: {k: v for k, v in fit.items() if k not in ("grid", "band_low", "band_high")}
                for key, fit in corr.by_group.items()
            },
            "win_counts": {k: {"wins": w["wins"], "total": w["total"]} for k, w in win.items()},
            "convergence": convergence,
            "findings": [
                {"key": f.key, "finding": f.finding, "verdict": f.verdict, "ours": f.ours}
                for f in found
            ],
            "figures": out.figures,
            "skipped": out.skipped,
            "tables": out.tables,
        }
    )


def write_report(
    results_df: pd.DataFrame,
    model_table_df: pd.DataFrame,
    output_dir: str,
    features_dir: str | None = None,
    *,
    num_bootstrap: int = 1000,
    permutation_samples: int = 10000,
    seed: int = 0,
    tsne_max_iter: int = 1000,
) -> dict:
    """Writes the CSV tables, figures, report.html and report.md into `output_dir`.

    results_df: `transfer_tf.results.load(results_dir)`. model_table_df: model, architecture,
    settings, source_top1 (fraction; `imagenet_top1` in older tables), top1_source.
    features_dir: optional folder of features .npz files for t-SNE (`tsne_max_iter`: sklearn's
    optimisation steps; 1000 is its default).
    Returns the headline numbers (JSON-able; also saved as headline.json).
    """
    os.makedirs(os.path.join(output_dir, "figures"), exist_ok=True)
    out = _Output(output_dir)
    results_df, predictor_rows = predictor_analysis.split_results(results_df)
    model_table = tables.validate_model_table(model_table_df)
    best = _final_tables(out, results_df, model_table)
    corr = _correlation_part(out, best, num_bootstrap, seed)
    parts = _comparison_part(out, best, results_df, permutation_samples, seed)
    model_info = model_table.set_index("model", drop=False)
    samples, problems = _feature_part(out, features_dir, seed, model_info, tsne_max_iter)
    parts.update(feature_samples=samples, feature_problems=problems)
    parts["predictor_sections"] = _predictor_part(
        out, predictor_rows, best, model_table, results_df, num_bootstrap, seed
    )
    source = _source(best, corr.primary)
    found = findings.findings(
        findings.Evidence(
            correlations=corr,
            win_counts=parts["win_counts"],
            across_models=parts["across_models"],
            convergence=parts["convergence"],
            subset_gaps=parts["subset_gaps"],
            settings_effects=parts["settings_effects"],
            feature_samples=samples,
            model_info=model_info,
            source=source,
        )
    )
    out.table("findings", pd.DataFrame([f.as_dict() for f in found]))
    settings = {"num_bootstrap": num_bootstrap, "permutation_samples": permutation_samples}
    sections = _sections(out, parts, found, corr, source, settings)
    render.write(
        os.path.join(output_dir, "report.md"), render.to_markdown(TITLE, sections, output_dir)
    )
    render.write(os.path.join(output_dir, "report.html"), render.to_html(TITLE, sections))
    headline = _headline(out, corr, parts["win_counts"], parts["convergence"], found)
    with open(os.path.join(output_dir, "headline.json"), "w") as f:
        json.dump(headline, f, indent=1)
    return headline
