"""transfer-finetune: fine-tuning sweep (Sec. 4.2) from a pretraining run or registry weights.

    transfer-finetune --flagfile=flags/finetune/finetune.cfg --init_model_dir=/runs/inception_v3_fair \\
        --dataset=oxford_flowers102 --records_dir=/data/records --results_dir=/results

Grid on train/val, best cell retrained on train+val and scored on test; a rerun skips finished
cells and resumes a cut-short one from its checkpoint.
"""

from __future__ import annotations

from transfer_tf.bin import cli, sweep

sweep.define_sweep_flags("finetune")
main = sweep.sweep_main("finetune")


def run():
    cli.run("transfer-finetune", main)


if __name__ == "__main__":
    run()
