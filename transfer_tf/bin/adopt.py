"""Adopt work done outside a study (records, pretraining): mark its steps done once their
outputs exist, so the study skips them (`transfer_tf/study/adopt.py` says when a step counts as
complete). Run it with the study's own flags:

    python -m transfer_tf.bin.adopt --flagfile=flags/scale/paper_grid.cfg \\
        --study_dir=/shared/study --adopt=records,pretrain
"""

from __future__ import annotations

from absl import app, flags

from transfer_tf.bin import cli, study  # study defines the study's flags, which this binary reads
from transfer_tf.study import plan
from transfer_tf.study.adopt import KINDS, adopt

flags.DEFINE_list("adopt", list(KINDS), f"Step kinds to adopt, of {list(KINDS)}.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.study_dir:
        raise app.UsageError("--study_dir is required: the study whose steps to adopt")
    try:
        cfg = study.config_from_flags()
        adopted, missing = adopt(plan.plan_study(cfg), cfg.study_dir, FLAGS.adopt)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    for name in adopted:
        print(f"adopted {name}")
    for name, why in missing.items():
        print(f"not adopted {name}: {why}")
    print(f"{len(adopted)} step(s) adopted, {len(missing)} left to the study", flush=True)


if __name__ == "__main__":
    cli.run("transfer_tf.bin.adopt", main)
