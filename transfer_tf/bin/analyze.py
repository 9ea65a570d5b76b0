"""transfer-analyze: the paper's statistics, figures and one report from sweep results.

    transfer-analyze --results_dir=results/ --model_table=models.csv --output_dir=report/ \
        [--features_dir=features/]

Reads every cell JSON under --results_dir (transfer_tf.results.load) and the model table CSV
(model, architecture, settings, source_top1 as a fraction, top1_source), writes CSV tables,
figures, report.html and report.md into --output_dir, and prints the headline numbers.
"""

from __future__ import annotations

import os

import pandas as pd
from absl import app, flags

from transfer_tf import results
from transfer_tf.analysis import report
from transfer_tf.analysis.headline import headline_lines
from transfer_tf.bin import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("results_dir", None, "Folder of sweep cell JSONs (<protocol>/<cell_id>.json).")
flags.DEFINE_string(
    "model_table",
    None,
    "CSV: model, architecture, settings, source_top1 (the source model's top-1 as a fraction; "
    "imagenet_top1 in tables written before 2026-12-01), top1_source, optional source_dataset.",
)
flags.DEFINE_string(
    "features_dir", None, "Optional folder of features .npz files for t-SNE (Fig. 4)."
)
flags.DEFINE_string("output_dir", None, "Where the report, tables and figures go.")
flags.DEFINE_integer(
    "num_bootstrap", 1000, "Bootstrap resamples of models for the CI of r.", lower_bound=1
)
flags.DEFINE_integer(
    "permutation_samples", 10000, "Random swaps in the permutation test.", lower_bound=1
)
flags.DEFINE_integer("seed", 0, "Seed of the bootstrap, permutation test and t-SNE.")
flags.mark_flags_as_required(["results_dir", "model_table", "output_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not os.path.isfile(FLAGS.model_table):
        raise app.UsageError(
            f"--model_table {FLAGS.model_table!r} is not a file; pass the model CSV."
        )
    frame = results.load(FLAGS.results_dir)
    unreadable = frame.attrs.get(results.UNREADABLE, [])
    if unreadable:
        print(
            f"transfer-analyze: {len(unreadable)} cell file(s) under {FLAGS.results_dir} could not "
            f"be read and are left out (first: {unreadable[0][0]}: {unreadable[0][1]}); rerun "
            "their sweeps to compute them again",
            flush=True,
        )
    headline = report.write_report(
        frame,
        pd.read_csv(FLAGS.model_table),
        FLAGS.output_dir,
        FLAGS.features_dir,
        num_bootstrap=FLAGS.num_bootstrap,
        permutation_samples=FLAGS.permutation_samples,
        seed=FLAGS.seed,
    )
    for line in headline_lines(headline):
        print(line)


def run():
    cli.run("transfer-analyze", main)


if __name__ == "__main__":
    run()
