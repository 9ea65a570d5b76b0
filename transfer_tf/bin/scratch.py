"""transfer-scratch: training-from-random-initialisation sweep (Sec. 4.3).

    transfer-scratch --flagfile=flags/finetune/scratch.cfg --model=inception_v3 \\
        --dataset=stanford_cars --records_dir=/data/records --results_dir=/results

Grid on train/val, best cell retrained on train+val and scored on test; a rerun skips finished
cells and resumes a cut-short one from its checkpoint.
"""

from __future__ import annotations

from transfer_tf.bin import cli, sweep

sweep.define_sweep_flags("scratch")
main = sweep.sweep_main("scratch")


def run():
    cli.run("transfer-scratch", main)


if __name__ == "__main__":
    run()
