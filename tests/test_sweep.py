"""Sweeps: stable cell ids, atomic one-JSON-per-cell records, resume after SIGKILL, results.load."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from transfer_tf import results
from transfer_tf.protocols import sweep


def _cell(c=1.0, **kw):
    cell = dict(
        protocol="logreg",
        model="toy_net",
        architecture="toy",
        settings="fair",
        dataset="digits",
        metric="top1",
        stage="grid",
        hparams={"l2": 1.0 / c, "C": c},
        seed=0,
        per_class=None,
    )
    cell.update(kw)
    return cell


def test_cell_id_is_stable_readable_and_content_sensitive():
    a = _cell(0.5)
    assert sweep.cell_id(a) == sweep.cell_id(dict(reversed(list(a.items()))))
    assert sweep.cell_id(a) == sweep.cell_id(_cell(np.float64(0.5)))  # numpy == python
    assert sweep.cell_id(a).startswith("logreg-toy_net-digits-grid-")
    others = [_cell(0.25), _cell(0.5, seed=1), _cell(0.5, stage="final"), _cell(0.5, per_class=5)]
    ids = {sweep.cell_id(a)} | {sweep.cell_id(o) for o in others}
    assert len(ids) == 5
    # Same content → same id in another process (no per-process salt such as hash()).
    code = f"from transfer_tf.protocols import sweep; print(sweep.cell_id({a!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == sweep.cell_id(a)


def test_run_cells_writes_schema_predictions_and_skips_finished(tmp_path, capsys):
    calls = []

    def run_fn(cell):
        calls.append(cell["hparams"]["C"])
        if cell["stage"] == "final":
            y = np.array([0, 1, 2, 1])
            return {
                "test_metric": 0.75,
                "predictions": {"y_true": y, "y_pred": np.array([0, 1, 2, 2])},
            }
        return {"val_metric": cell["hparams"]["C"] / 10, "steps": 7}

    cells = [_cell(1.0), _cell(2.0), _cell(1.0), _cell(2.0, stage="final")]
    records = sweep.run_cells(cells, str(tmp_path), run_fn)
    assert calls == [1.0, 2.0, 2.0]  # the duplicate ran once
    assert [r["cell_id"] for r in records] == [sweep.cell_id(c) for c in cells]
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("[1/4] logreg toy_net digits grid l2=1 C=1  val=0.1000 test=-")
    assert lines[3].startswith("[4/4] logreg toy_net digits final") and "test=0.7500" in lines[3]

    files = sorted(os.listdir(tmp_path / "logreg"))
    assert len(files) == 4 and sum(f.endswith(".predictions.npz") for f in files) == 1
    final = json.loads((tmp_path / "logreg" / f"{sweep.cell_id(cells[3])}.json").read_text())
    assert list(final)[: len(sweep.SCHEMA_KEYS)] == list(sweep.SCHEMA_KEYS)
    assert final["val_metric"] is None and final["test_metric"] == 0.75
    assert final["history"] == [] and final["wall_time_s"] >= 0
    assert final["predictions"] == sweep.cell_id(cells[3]) + ".predictions.npz"
    # The commit of this checkout (HEAD may move while tests run: other developers commit).
    kind = subprocess.run(
        ["git", "cat-file", "-t", str(final["git_commit"])],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(sweep.__file__),
    ).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", final["git_commit"]) and kind == "commit"

    again = sweep.run_cells(cells, str(tmp_path), run_fn, progress=False)
    assert calls == [1.0, 2.0, 2.0] and again == records

    frame = results.load(str(tmp_path))
    assert len(frame) == 3 and {"hp.C", "hp.l2", "predictions_path"} <= set(frame.columns)
    assert "hparams" not in frame.columns
    grid = frame[frame.stage == "grid"].sort_values("hp.C")
    np.testing.assert_allclose(grid["val_metric"], [0.1, 0.2])
    np.testing.assert_allclose(grid["hp.l2"], [1.0, 0.5])
    preds = results.load_predictions(frame[frame.stage == "final"].predictions_path.item())
    np.testing.assert_array_equal(preds["y_pred"], [0, 1, 2, 2])


def test_bad_cells_and_results_are_rejected_or_skipped(tmp_path):
    with pytest.raises(ValueError, match="protocol"):
        sweep.run_cells([_cell(protocol="svm")], str(tmp_path), lambda c: {})
    with pytest.raises(ValueError, match="outside the result schema"):
        sweep.run_cells([_cell()], str(tmp_path), lambda c: {"best_C": 1.0})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        results.load(str(tmp_path / "nowhere"))
    assert results.load(str(tmp_path)).empty
    sweep.run_cells([_cell()], str(tmp_path), lambda c: {"val_metric": 0.5}, progress=False)
    d = tmp_path / "logreg"
    (d / f".{sweep.cell_id(_cell(3.0))}.json.tmp-1-abc").write_text('{"cell_id": "x", "prot')
    (d / "torn.json").write_text('{"cell_id": "torn", "protocol": "log')  # not via run_cells
    (d / "manifest.json").write_text('{"model": "toy"}')
    with pytest.warns(UserWarning, match="torn.json"):
        frame = results.load(str(tmp_path))
    assert frame.cell_id.tolist() == [sweep.cell_id(_cell())]


SWEEP_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from transfer_tf.protocols import sweep
    results_dir, log = sys.argv[1], sys.argv[2]
    def run_fn(cell):
        with open(log, "a") as f:
            f.write(f"{cell['hparams']['C']}\\n")
        time.sleep(0.15)
        return {"val_metric": 0.5, "predictions": {"y_pred": np.arange(1000)}}
    cells = [dict(protocol="logreg", model="m", dataset="d", stage="grid", hparams={"C": float(i)},
                  seed=0) for i in range(N_CELLS)]
    sweep.run_cells(cells, results_dir, run_fn)
    """
)
N_CELLS = 12


@pytest.mark.subprocess
def test_sweep_killed_with_sigkill_and_rerun_has_every_cell_exactly_once(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP_SCRIPT.replace("N_CELLS", str(N_CELLS)))
    out, log = tmp_path / "results", tmp_path / "calls.log"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), str(log)], stdout=subprocess.DEVNULL
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        done = [f for f in os.listdir(out / "logreg")] if (out / "logreg").exists() else []
        if sum(f.endswith(".json") for f in done) >= 4:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished_before = {f for f in os.listdir(out / "logreg") if f.endswith(".json")}
    assert 4 <= len(finished_before) < N_CELLS  # killed mid-run

    subprocess.run(
        [sys.executable, str(script), str(out), str(log)], check=True, stdout=subprocess.DEVNULL
    )
    calls = [float(c) for c in log.read_text().split()]
    # Every cell ran to completion once; only the cell interrupted by the kill ran twice.
    assert sorted(set(calls)) == [float(i) for i in range(N_CELLS)]
    assert len(calls) - N_CELLS <= 1
    frame = results.load(str(out))
    assert len(frame) == N_CELLS and frame.cell_id.is_unique
    assert sorted(frame["hp.C"]) == [float(i) for i in range(N_CELLS)]
    json_files = [f for f in os.listdir(out / "logreg") if f.endswith(".json")]
    assert len(json_files) == N_CELLS and finished_before <= set(json_files)
    for path in frame.predictions_path:
        np.testing.assert_array_equal(results.load_predictions(path)["y_pred"], np.arange(1000))
