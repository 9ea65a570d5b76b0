"""Scale-out: a sweep split into one step per grid cell (`transfer-study --split_grid_cells`).

On a local Ray cluster (2 CPUs) the planner's steps of a scratch sweep (2 grid cells + final) run
as Ray tasks; the worker running one grid cell is SIGKILLed mid-cell and Ray retries it, which
resumes the cell from its last checkpoint. Every cell must end up exactly once, and the same
planned steps on the local executor must give identical result rows and bit-identical weights
(TF on CPU is deterministic across processes for a given seed here: no tolerance is needed).
The planner tests check the split against the binary's own grid functions; the scale flagfiles
must parse into the paper's recipe and grid.
"""

import dataclasses
import glob
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from transfer_tf import results
from transfer_tf.bin import sweep
from transfer_tf.protocols import finetune
from transfer_tf.protocols.finetune_grid import finetune_grid, scratch_grid
from transfer_tf.protocols.sources import source_from_registry
from transfer_tf.study import plan
from transfer_tf.study.executors import LocalExecutor, RayExecutor
from transfer_tf.study.steps import topological_order

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 16
# Checkpoints at 6 and 12, evaluations at 8 and 16: the kill comes at a checkpoint that is not an
# evaluation step, so the retry resumes from it and evaluates step 8 itself if it was lost.
SCRATCH_FLAGS = f"""# a 2 x 1 scratch grid of {STEPS} steps of 16 images
--learning_rates=0.5,1.0
--weight_decays=0.0001
--train_steps={STEPS}
--batch_size=16
--eval_every=8
--checkpoint_every=6
--log_every=4
--keep_runs
"""
IGNORED_COLUMNS = ["wall_time_s", "git_commit", "predictions_path"]


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    return env


# ---------------------------------------------------------------------------------------------
# The planner: split sweeps, grids from the binary's flags and grid functions.


def _split_plan(tmp_path, **kwargs):
    cfg = plan.StudyConfig(
        study_dir=str(tmp_path / "study"),
        target_datasets=("sklearn_digits", "dtd"),
        public_models=("efficientnet_lite0",),
        finetune_models=("efficientnet_lite0",),
        scratch_models=("mobilenet_v1",),
        **kwargs,
    )
    return plan.plan_study(cfg), plan.plan_study(dataclasses.replace(cfg, split_grid_cells=False))


def _grid_of(steps):
    points = []
    for step in steps:
        flags = dict(a[2:].split("=", 1) for a in step.argv if a.startswith("--") and "=" in a)
        assert flags["stage"] == "grid"
        points.append(
            {
                "learning_rate": float(flags["learning_rates"]),
                "weight_decay": float(flags["weight_decays"]),
            }
        )
    return points


def test_planner_splits_each_sweep_into_its_grid_cells_and_a_final_step(tmp_path):
    split, whole = _split_plan(
        tmp_path,
        finetune_flagfile=os.path.join(ROOT, "flags/finetune/finetune.cfg"),
        scratch_flagfile=os.path.join(ROOT, "flags/finetune/scratch.cfg"),
        split_grid_cells=True,
    )
    by_name = {s.name: s for s in split}
    sweeps = [s for s in whole if s.argv[0] in ("transfer-finetune", "transfer-scratch")]
    assert len(sweeps) == 4  # (finetune, scratch) x 2 datasets
    # Every other step is planned exactly as without the split (the analysis also waits for the
    # cells); each sweep gains 56 cell steps.
    assert len(split) == len(whole) + 4 * 56
    for step in whole:
        if step not in sweeps and step.name != "analyze":
            assert by_name[step.name] == step
    for step in sweeps:
        final = by_name[step.name]
        assert final.argv == (*step.argv, "--stage=all")
        cells = [by_name[d] for d in final.deps if d not in step.deps]
        assert final.deps[: len(step.deps)] == step.deps
        assert [c.name for c in cells] == [f"{step.name}-grid{i:02d}" for i in range(56)]
        for cell in cells:
            assert cell.deps == step.deps and cell.num_cpus == step.num_cpus
            assert cell.argv[: len(step.argv)] == step.argv
        want = finetune_grid() if step.argv[0] == "transfer-finetune" else scratch_grid()
        assert _grid_of(cells) == want  # exact floats: the cells hash like the full grid's
    analyze = next(s for s in whole if s.name == "analyze")
    assert by_name["analyze"].argv == analyze.argv
    assert set(by_name["analyze"].deps) == set(analyze.deps) | {
        s.name for s in split if "-grid" in s.name
    }
    assert len(topological_order(split)) == len(split)


def test_planner_reads_only_the_grid_flags_as_the_binary_does(tmp_path):
    base = os.path.join(ROOT, "flags/finetune/finetune.cfg")
    nested = tmp_path / "nested.cfg"
    # Nested flagfile, last value wins, other flags of the binary ignored.
    nested.write_text(
        f"--flagfile={base}\n--num_learning_rates=2\n--nono_decay_cell\n"
        "--train_steps=5\n--nokeep_runs\n--init_model_dir=/x\n"
    )
    assert plan.sweep_grid("finetune", str(nested)) == finetune_grid(2, 7, include_no_decay=False)
    assert len(plan.sweep_grid("finetune", str(nested))) == 14
    assert plan.sweep_grid("scratch", None) == scratch_grid(7, 8)
    explicit = tmp_path / "explicit.cfg"
    explicit.write_text(
        "--learning_rates=0.1,0.01\n--weight_decays=0,1e-4\n--num_learning_rates=5\n"
    )
    assert plan.sweep_grid("finetune", str(explicit)) == [
        {"learning_rate": 0.1, "weight_decay": 0.0},
        {"learning_rate": 0.1, "weight_decay": 1e-4},
        {"learning_rate": 0.01, "weight_decay": 0.0},
        {"learning_rate": 0.01, "weight_decay": 1e-4},
    ]
    # What the binary would reject, the planner rejects, naming the flagfile.
    for text, reason in [
        ("--learning_rates=0.1\n", "both --learning_rates and --weight_decays"),
        ("--learning_rates=0.1\n--weight_decays=-1\n", "weight decays >= 0"),
        ("--num_learning_rates=many\n", "num_learning_rates"),
        ("--num_weight_decays=0\n", "at least one value"),
    ]:
        bad = tmp_path / "bad.cfg"
        bad.write_text(text)
        with pytest.raises(ValueError, match=f"(?s)--scratch_flagfile={bad}: bad grid.*{reason}"):
            plan.sweep_grid("scratch", str(bad))
        with pytest.raises(ValueError, match=f"--scratch_flagfile={bad}"):
            _split_plan(tmp_path, scratch_flagfile=str(bad), split_grid_cells=True)


def test_stage_grid_summary_and_bad_stage():
    result = finetune.SweepResult(
        grid=[{"cell_id": "a"}, {"cell_id": "b"}],
        best_hparams={"learning_rate": 0.1, "weight_decay": 1e-4},
        best_val_metric=0.5,
        final=None,
    )
    assert result.test_metric is None
    assert sweep.summary_line("scratch", result) == (
        "scratch: best learning_rate=0.1 weight_decay=0.0001 (val 0.5000); 2 grid cell(s) done; "
        "no final cell (--stage=grid)"
    )
    source = source_from_registry("mobilenet_v1", weights=None, settings={})
    recipe = finetune.make_recipe(
        "scratch", source, dataset="sklearn_digits", grid=scratch_grid(1, 1)
    )
    with pytest.raises(ValueError, match=r"--stage='final': use one of \['all', 'grid'\]"):
        finetune.run_sweep(recipe, records_dir="/r", results_dir="/r", scope="final")


# ---------------------------------------------------------------------------------------------
# The scale flagfiles.


@pytest.mark.subprocess
def test_paper_grid_flagfile_plans_the_full_grid_for_ray(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "transfer_tf.bin.study",
            "--flagfile=flags/scale/paper_grid.cfg",
            f"--study_dir={tmp_path / 'paper'}",
            "--dry_run",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    names = [line.split("  <-")[0] for line in out.stdout.splitlines() if "  <-" in line]
    models, datasets, cells = 16, 12, 56
    pretrained = models * 2  # fair and Inception-default settings (Fig. 3)
    # Fig. 9: Inception v4 on 10 targets, 4 sizes x 3 subsets, in each protocol.
    subset_sweeps = 10 * 4 * 3
    expected = {
        "records": 1 + datasets,  # ImageNet + the 12 targets
        "pretrain": pretrained,
        "export": pretrained,
        "features": pretrained * datasets,
        "logreg": pretrained * datasets + subset_sweeps,
        # fair models only (Sec. 4.2)
        "finetune": (models * datasets + subset_sweeps) * (cells + 1),
        "scratch": (models * datasets + subset_sweeps) * (cells + 1),
        "model-table": 1,
        "analyze": 1,
    }
    counts = {}
    for name in names:
        kind = "model-table" if name == "model-table" else name.split("-")[0]
        counts[kind] = counts.get(kind, 0) + 1
    assert counts == expected
    assert len(names) == sum(expected.values()) == 36_535
    assert sum("--stage=grid" in line for line in out.stdout.splitlines()) == 2 * (192 + 120) * 56
    assert "logreg-inception_v4_fair-dtd-n16-s2" in names
    assert "--learning_rates=0.0001 --weight_decays=1e-06 --stage=grid" in out.stdout
    commands = [line.split() for line in out.stdout.splitlines() if line.startswith("    ")]
    for binary, flagfile in [
        ("transfer-finetune", "flags/finetune/finetune.cfg"),
        ("transfer-scratch", "flags/finetune/scratch.cfg"),
    ]:
        used = {a for c in commands if c[0] == binary for a in c if a.startswith("--flagfile=")}
        assert used == {f"--flagfile={os.path.join(ROOT, flagfile)}"}


@pytest.mark.subprocess
def test_scale_pretrain_flagfiles_are_the_papers_recipe_at_batch_4096():
    code = """
import json
from absl import flags
from transfer_tf.bin import pretrain  # noqa: F401 (defines the flags)
from transfer_tf.training import TrainConfig
from transfer_tf.bin import training_flags
from transfer_tf.training.config import dataset_fields
out = {}
for path in ["flags/pretrain/inception_v3_fair.cfg", "flags/scale/pretrain_multiworker.cfg",
             "flags/scale/pretrain_tpu.cfg"]:
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["x", "--flagfile=" + path, "--model=resnet_50", "--records_dir=/r",
                 "--model_dir=/m"])
    f = flags.FLAGS
    config = TrainConfig(model=f.model, dataset=f.dataset, records_dir="/r",
                         train_split=f.train_split, eval_split=f.eval_split,
                         **dataset_fields(f.dataset),
                         **training_flags.config_kwargs_from_flags(f))
    out[path] = dict(config.to_dict(), peak=config.peak_learning_rate)
print("RESULT " + json.dumps(out))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.split("RESULT ", 1)[1])
    fair = got.pop("flags/pretrain/inception_v3_fair.cfg")
    for path, c in got.items():
        assert c["batch_size"] == 4096 and c["lr_reference_batch"] == 256, path
        assert c["peak"] == pytest.approx(0.041 * 4096 / 256), path  # linear scaling from 256
        assert c["train_steps"] == 31_280  # 100 epochs of 1,281,167 images
        assert c["settings"] == {
            "bn_scale": True,
            "dropout_rate": 0.0,
            "aux_head": False,
            "label_smoothing": 0.0,
        }
        assert c["eval_split"] == "test" and c["checkpoint_input"] is False
        # The recipe of flags/pretrain/inception_v3_fair.cfg; only the device flags differ.
        differ = {k for k in c if c[k] != fair[k]}
        assert differ == ({"tpu"} if "tpu" in path else {"autoshard"}), (path, differ)
    assert got["flags/scale/pretrain_tpu.cfg"]["tpu"] == "local"
    assert got["flags/scale/pretrain_multiworker.cfg"]["autoshard"] == "file"


# ---------------------------------------------------------------------------------------------
# One small sweep on Ray (with a killed worker) and on the local executor.


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transfer_tf.data import write_tfrecords

    root = tmp_path_factory.mktemp("scale")
    write_tfrecords("sklearn_digits", root / "records", max_per_class=10)  # 100 / 100 / 100
    flagfile = root / "scratch.cfg"
    flagfile.write_text(SCRATCH_FLAGS)
    return root, flagfile


def _planned_sweep(setup, name):
    """The study planner's steps for one scratch sweep, split into grid cells."""
    root, flagfile = setup
    study_dir = root / name
    cfg = plan.StudyConfig(
        study_dir=str(study_dir),
        target_datasets=("sklearn_digits",),
        scratch_models=("mobilenet_v1",),
        scratch_flagfile=str(flagfile),
        pretrain_input_size=32,
        split_grid_cells=True,
    )
    steps = [s for s in plan.plan_study(cfg) if s.argv[0] == "transfer-scratch"]
    assert [s.name for s in steps] == [
        "scratch-mobilenet_v1-sklearn_digits-grid0",
        "scratch-mobilenet_v1-sklearn_digits-grid1",
        "scratch-mobilenet_v1-sklearn_digits",
    ]
    # The records were written once by the fixture (the planner's records step runs the same
    # converter); the sweep steps read them through <study_dir>/records.
    study_dir.mkdir()
    os.symlink(root / "records", study_dir / "records")
    steps = [
        dataclasses.replace(s, deps=tuple(d for d in s.deps if d.startswith("scratch-")))
        for s in steps
    ]
    return steps, study_dir


def _processes():
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    yield int(pid), f.read().decode(errors="replace").split("\0")
            except OSError:
                continue


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _latest_checkpoint(run_dir: str) -> int | None:
    try:
        with open(os.path.join(run_dir, "ckpt", "checkpoint")) as f:
            match = re.search(r'model_checkpoint_path: "ckpt-(\d+)"', f.read())
    except OSError:
        return None
    return int(match.group(1)) if match else None


@pytest.fixture(scope="module")
def ray_run(setup):
    """Runs the split sweep on a 2-CPU Ray cluster and SIGKILLs the worker running grid cell 0
    once that cell has a checkpoint it has not evaluated at (see SCRATCH_FLAGS)."""
    ray = pytest.importorskip("ray", reason="Ray is the optional extra transfer_tf[ray]")
    steps, study_dir = _planned_sweep(setup, "ray")
    target = steps[0]
    cell_flag = next(a for a in target.argv if a.startswith("--learning_rates="))
    lr = float(cell_flag.split("=")[1])
    results_flag = f"--results_dir={study_dir / 'results'}"
    runs = str(study_dir / "results" / "runs" / "scratch")
    killed, stop = {}, threading.Event()

    def kill_mid_cell():
        while not stop.is_set():
            for run_dir in glob.glob(os.path.join(runs, "*-grid-*")):
                try:
                    with open(os.path.join(run_dir, "config.json")) as f:
                        if json.load(f)["learning_rate"] != lr:
                            continue
                except (OSError, ValueError):
                    continue
                step = _latest_checkpoint(run_dir)
                if step is None or step % 8 == 0:
                    continue
                for pid, argv in _processes():
                    if cell_flag in argv and results_flag in argv and "--stage=grid" in argv:
                        worker = _parent(pid)
                        with open(f"/proc/{worker}/cmdline", "rb") as f:
                            worker_title = f.read().decode(errors="replace")
                        os.kill(worker, signal.SIGKILL)
                        killed.update(
                            step_pid=pid,
                            worker=worker,
                            worker_title=worker_title,
                            checkpoint=step,
                            run_dir=run_dir,
                        )
                        return
            time.sleep(0.05)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    killer = threading.Thread(target=kill_mid_cell, daemon=True)
    killer.start()
    start = time.time()
    try:
        done = RayExecutor(max_retries=2, cpus_per_step=1).run(steps, str(study_dir))
    finally:
        stop.set()
        killer.join()
        ray.shutdown()
    return dict(
        steps=steps, study_dir=study_dir, done=done, killed=killed, wall=time.time() - start
    )


def test_ray_retries_a_killed_cell_and_every_cell_ends_up_once(ray_run):
    steps, study_dir, killed = ray_run["steps"], ray_run["study_dir"], ray_run["killed"]
    assert killed, "the grid cell finished before the test could kill its worker"
    # The killed process was a Ray worker running that step; the step's command died with it.
    assert killed["worker_title"].startswith("ray::"), killed["worker_title"]
    deadline = time.time() + 30
    while _alive(killed["step_pid"]) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(killed["step_pid"])
    assert set(ray_run["done"]) == {s.name for s in steps}

    # Every cell exactly once: 2 grid cells and one final, one JSON each.
    results_dir = study_dir / "results"
    frame = results.load(str(results_dir))
    assert len(frame) == 3 and frame["cell_id"].is_unique
    assert sorted(frame["stage"]) == ["final", "grid", "grid"]
    assert sorted(n for n in os.listdir(results_dir / "scratch") if n.endswith(".json")) == sorted(
        f"{c}.json" for c in frame["cell_id"]
    )
    grid = frame[frame["stage"] == "grid"].sort_values("hp.learning_rate")
    assert list(grid["hp.learning_rate"]) == [0.5, 1.0] and (frame["steps"] == STEPS).all()
    for history in grid["history"]:
        assert [h["step"] for h in history] == [1, 2, 4, 8, 16]  # doubling steps (Fig. 8) too
    final = frame[frame["stage"] == "final"].iloc[0]
    assert final["hp.learning_rate"] == grid.loc[grid["val_metric"].idxmax(), "hp.learning_rate"]

    # The killed cell ran twice: two processes wrote its TensorBoard events, and the retry's log
    # (the step's log is rewritten per attempt) resumed from the checkpoint the first one left.
    log = (study_dir / "logs" / f"{steps[0].name}.log").read_text()
    resumed = re.search(r"resuming at step (\d+)", log)
    assert resumed and killed["checkpoint"] <= int(resumed.group(1)) < STEPS, log[-2000:]
    events = glob.glob(os.path.join(killed["run_dir"], "tb", "events.out.tfevents.*"))
    assert len({e.split(".")[-3] for e in events}) == 2, events  # one writer pid per attempt
    other = (study_dir / "logs" / f"{steps[1].name}.log").read_text()
    assert "from the start" in other and "resuming at step" not in other
    # The final step found both grid cells done (same content, same cell ids) and ran the final.
    final_log = (study_dir / "logs" / f"{steps[2].name}.log").read_text()
    assert final_log.count("(done before)") == 2 and "final top1 on test" in final_log


def _checkpoint_values(run_dir: str) -> dict:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(os.path.join(run_dir, "ckpt"))
    return {
        name: reader.get_tensor(name)
        for name, dtype in reader.get_variable_to_dtype_map().items()
        if dtype != tf.variant and not name.startswith("save_counter")  # iterator state, count
    }


def test_local_and_ray_executors_give_identical_results(setup, ray_run):
    steps, study_dir = _planned_sweep(setup, "local")
    done = LocalExecutor(max_concurrent=2).run(steps, str(study_dir))
    assert set(done) == {s.name for s in steps}
    frames = []
    for d in (ray_run["study_dir"], study_dir):
        frame = results.load(str(d / "results")).drop(columns=IGNORED_COLUMNS)
        frames.append(frame.sort_values("cell_id").reset_index(drop=True))
    ray_frame, local_frame = frames
    assert len(local_frame) == 3
    pd.testing.assert_frame_equal(local_frame, ray_frame, check_exact=True)
    # Beyond the rows: the final test predictions and every cell's weights, bit for bit (the Ray
    # run's grid cell 0 was killed and resumed from a checkpoint).
    name = local_frame.loc[local_frame["stage"] == "final", "predictions"].iloc[0]
    a = np.load(ray_run["study_dir"] / "results" / "scratch" / name)
    b = np.load(study_dir / "results" / "scratch" / name)
    assert sorted(a.files) == sorted(b.files) == ["ids", "y_pred", "y_true"]
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    for cell in local_frame["cell_id"]:
        want = _checkpoint_values(str(ray_run["study_dir"] / "results" / "runs" / "scratch" / cell))
        got = _checkpoint_values(str(study_dir / "results" / "runs" / "scratch" / cell))
        assert len(want) > 100 and set(got) == set(want)
        for key, value in want.items():
            np.testing.assert_array_equal(got[key], value, err_msg=f"{cell}: {key}")


# ---------------------------------------------------------------------------------------------
# Work done outside the study (records with --manual_dir, pretraining on many GPUs / a TPU).


def test_adopt_marks_finished_outside_work_done_and_refuses_unfinished_work(setup, tmp_path):
    from transfer_tf.study import adopt
    from transfer_tf.training import TrainConfig
    from transfer_tf.training.config import save_config

    root, _ = setup
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    os.symlink(root / "records", study_dir / "records")
    cfg = plan.StudyConfig(
        study_dir=str(study_dir),
        source_dataset="sklearn_digits",
        pretrain_models=("mobilenet_v1",),
        pretrain_settings=("fair",),
        pretrain_steps=2,
        target_datasets=("sklearn_digits",),
    )
    steps = [s for s in plan.plan_study(cfg) if s.name.startswith(("records-", "pretrain-"))]
    assert [s.name for s in steps] == ["records-sklearn_digits", "pretrain-mobilenet_v1_fair"]
    adopted, missing = adopt.adopt(steps, str(study_dir), ["records", "pretrain"])
    assert adopted == ["records-sklearn_digits"]
    assert "config.json does not exist" in missing["pretrain-mobilenet_v1_fair"]

    # A run of the planned architecture and settings, cut short at step 1 of 2: not adopted.
    model_dir = study_dir / "models" / "mobilenet_v1_fair"
    fair = {"bn_scale": True, "dropout_rate": 0.0, "aux_head": False, "label_smoothing": 0.0}
    config = TrainConfig(
        model="mobilenet_v1",
        dataset="sklearn_digits",
        records_dir="/r",
        num_classes=10,
        train_steps=2,
        settings=fair,
    )
    save_config(config, str(model_dir))
    (model_dir / "ckpt").mkdir()
    (model_dir / "ckpt" / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    _, missing = adopt.adopt(steps, str(study_dir), ["pretrain"])
    assert "is at step 1 of 2" in missing["pretrain-mobilenet_v1_fair"]
    # Finished, but with other training settings than the planned label: not adopted.
    (model_dir / "ckpt" / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"\n')
    save_config(config.replace(settings={**fair, "label_smoothing": 0.1}), str(model_dir))
    _, missing = adopt.adopt(steps, str(study_dir), ["pretrain"])
    assert "the study plans" in missing["pretrain-mobilenet_v1_fair"]
    with pytest.raises(ValueError, match=r"--adopt: unknown step kinds \['logreg'\]"):
        adopt.adopt(steps, str(study_dir), ["logreg"])

    # The finished run of the planned settings is adopted (through the command line, with the
    # study's own flags), and the study then skips both steps without running them.
    save_config(config, str(model_dir))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "transfer_tf.bin.adopt",
            f"--study_dir={study_dir}",
            "--source_dataset=sklearn_digits",
            "--pretrain_models=mobilenet_v1",
            "--pretrain_settings=fair",
            "--pretrain_steps=2",
            "--target_datasets=sklearn_digits",
            "--adopt=records,pretrain",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "adopted pretrain-mobilenet_v1_fair" in out.stdout
    assert "1 step(s) adopted, 0 left to the study" in out.stdout  # records: adopted before
    done = LocalExecutor().run(steps, str(study_dir))
    assert all(r["skipped"] for r in done.values()) and not (study_dir / "logs").exists()
