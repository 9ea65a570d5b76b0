"""transfer-scratch: training-from-random-initialisation sweep (Sec. 4.3).

    transfer-scratch --flagfile=flags/finetune/scratch.cfg --model=inception_v3 \\
        --dataset=stanford_cars --records_dir=/data/records --results_dir=/results

Grid on train/val, best cell retrained on train+val and scored on test; a rerun skips finished
cells and resumes a cut-short one from its checkpoint.
"""

from __future__ import annotations

from absl import app, flags

from transfer_tf.protocols import finetune

finetune.define_sweep_flags("scratch")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        result = finetune.sweep_from_flags("scratch", FLAGS)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    print(finetune.summary_line("scratch", result), flush=True)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
