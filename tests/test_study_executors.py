"""The study's step graph and its two executors (local pool, Ray), on small real commands."""

import json
import os
import signal
import threading
import time

import pytest

from transfer_tf.study.executors import LocalExecutor, RayExecutor, make_executor
from transfer_tf.study.steps import (
    STARTED_AT_ENV,
    STARTUP_FILE_ENV,
    Step,
    StepFailed,
    overhead_summary,
    run_step,
    topological_order,
)


def _write_step(name, path, text, deps=()):
    code = f"import os; p={str(path)!r}; t=p+'.tmp'; open(t,'w').write({text!r}); os.replace(t, p)"
    return Step(name, ("python", "-c", code), deps=tuple(deps))


def _concat_step(name, inputs, output, deps):
    code = (
        f"out=''.join(open(p).read() for p in {[str(p) for p in inputs]!r}); "
        f"open({str(output)!r},'w').write(out)"
    )
    return Step(name, ("python", "-c", code), deps=tuple(deps))


def test_topological_order_puts_deps_first_and_rejects_bad_graphs():
    a, b, c = (
        Step("a", ("python",)),
        Step("b", ("python",), ("a",)),
        Step("c", ("python",), ("b", "a")),
    )
    names = [s.name for s in topological_order([c, b, a])]
    assert names.index("a") < names.index("b") < names.index("c")
    with pytest.raises(ValueError, match="cycle: (a -> b -> a|b -> a -> b)"):
        topological_order([Step("a", ("python",), ("b",)), Step("b", ("python",), ("a",))])
    with pytest.raises(ValueError, match="unknown steps \\['zz'\\]"):
        topological_order([Step("a", ("python",), ("zz",))])
    with pytest.raises(ValueError, match="two steps are named 'a'"):
        topological_order([a, a])
    with pytest.raises(ValueError, match="unknown binary 'transfer-nope'"):
        Step("x", ("transfer-nope",)).command()


def test_local_executor_runs_in_order_and_a_rerun_skips_finished_steps(tmp_path):
    state = str(tmp_path / "state")
    steps = [
        _concat_step(
            "join", [tmp_path / "a.txt", tmp_path / "b.txt"], tmp_path / "ab.txt", deps=["a", "b"]
        ),
        _write_step("a", tmp_path / "a.txt", "A"),
        _write_step("b", tmp_path / "b.txt", "B"),
    ]
    done = LocalExecutor(max_concurrent=2).run(steps, state)
    assert (tmp_path / "ab.txt").read_text() == "AB"
    assert not any(r["skipped"] for r in done.values())
    os.remove(tmp_path / "ab.txt")  # a finished step is not rerun, even if its output went away
    again = LocalExecutor(max_concurrent=2).run(steps, state)
    assert all(r["skipped"] for r in again.values())
    assert not (tmp_path / "ab.txt").exists()
    # A changed command is a different step: it runs again.
    changed = [_write_step("a", tmp_path / "a.txt", "A2")]
    assert not LocalExecutor().run(changed, state)["a"]["skipped"]
    assert (tmp_path / "a.txt").read_text() == "A2"


def test_a_rerun_dependency_or_an_edited_flagfile_makes_a_step_run_again(tmp_path):
    state = str(tmp_path / "state")
    a = _write_step("a", tmp_path / "a.txt", "A")
    b = _write_step("b", tmp_path / "b.txt", "B")
    join = _concat_step(
        "join", [tmp_path / "a.txt", tmp_path / "b.txt"], tmp_path / "ab.txt", deps=["a", "b"]
    )
    LocalExecutor().run([a, b, join], state)
    # "a" runs again (its command changed); "join" had finished before that: it is stale.
    a2 = _write_step("a", tmp_path / "a.txt", "A2")
    again = LocalExecutor().run([a2, b, join], state)
    assert {n: r["skipped"] for n, r in again.items()} == {"a": False, "b": True, "join": False}
    assert (tmp_path / "ab.txt").read_text() == "A2B"
    assert all(r["skipped"] for r in LocalExecutor().run([a2, b, join], state).values())
    # A step reads a flagfile that reads another: editing the inner one changes the step.
    inner, outer = tmp_path / "inner.cfg", tmp_path / "outer.cfg"
    inner.write_text("--x=1\n")
    outer.write_text(f"# comment\n--flagfile={inner}\n")
    step = Step("f", ("python", "-c", "pass", f"--flagfile={outer}"))
    assert not run_step(step, state)["skipped"] and run_step(step, state)["skipped"]
    inner.write_text("--x=2\n")
    assert not run_step(step, state)["skipped"]
    # A missing flagfile still fingerprints (the binary reports it when the step runs).
    assert Step("g", ("python", f"--flagfile={tmp_path / 'nope.cfg'}")).fingerprint()


def test_a_failing_step_stops_its_dependents_and_reports_its_log(tmp_path):
    state = str(tmp_path / "state")
    bad = Step("bad", ("python", "-c", "import sys; print('the reason'); sys.exit(3)"))
    after = _write_step("after", tmp_path / "after.txt", "x", deps=["bad"])
    with pytest.raises(StepFailed, match=r"(?s)step 'bad' exited with 3.*the reason"):
        LocalExecutor(max_concurrent=2).run([bad, after], state)
    assert not (tmp_path / "after.txt").exists()
    assert not os.path.exists(os.path.join(state, "steps", "bad.done.json"))


def test_make_executor_rejects_unknown_names():
    with pytest.raises(ValueError, match="--executor must be one of"):
        make_executor("slurm")
    with pytest.raises(ValueError, match="--max_concurrent must be >= 1"):
        make_executor("local", max_concurrent=0)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is the optional extra transfer_tf[ray]")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_executor_retries_a_step_whose_worker_is_killed(tmp_path, ray_cluster):
    """The worker running a step is SIGKILLed mid-step; Ray retries it; it completes once."""
    attempts = tmp_path / "attempts.txt"
    result = tmp_path / "result.json"
    code = f"""
import json, os, time
a = {str(attempts)!r}
n = len(open(a).read().splitlines()) if os.path.exists(a) else 0
open(a, 'a').write(f"{{os.getpid()}} {{os.getppid()}}\\n")
if n == 0:
    time.sleep(120)  # the test kills our worker now
tmp = {str(result)!r} + '.tmp'
json.dump({{'attempt': n + 1}}, open(tmp, 'w')); os.replace(tmp, {str(result)!r})
"""
    steps = [
        Step("slow", ("python", "-c", code)),
        _write_step("after", tmp_path / "after.txt", "done", deps=["slow"]),
    ]

    def kill_first_worker():
        deadline = time.time() + 90
        while time.time() < deadline:
            if attempts.exists() and attempts.read_text().strip():
                _, worker_pid = attempts.read_text().split()[:2]
                os.kill(int(worker_pid), signal.SIGKILL)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_first_worker)
    killer.start()
    done = RayExecutor(max_retries=2).run(steps, str(tmp_path / "state"))
    killer.join()
    lines = attempts.read_text().splitlines()
    assert len(lines) == 2, lines  # killed once, retried once
    assert json.loads(result.read_text()) == {"attempt": 2}
    assert (tmp_path / "after.txt").read_text() == "done"
    assert set(done) == {"slow", "after"}
    assert sorted(os.listdir(tmp_path / "state" / "steps")) == ["after.done.json", "slow.done.json"]


def test_ray_executor_reports_a_failing_step_without_retrying(tmp_path, ray_cluster):
    counter = tmp_path / "count.txt"
    code = f"open({str(counter)!r}, 'a').write('x'); import sys; print('broken input'); sys.exit(2)"
    with pytest.raises(StepFailed, match="(?s)step 'bad'.*broken input"):
        RayExecutor(max_retries=3).run(
            [Step("bad", ("python", "-c", code))], str(tmp_path / "state")
        )
    assert counter.read_text() == "x"


def test_run_step_marker_records_the_command_fingerprint(tmp_path):
    step = _write_step("w", tmp_path / "w.txt", "1")
    rec = run_step(step, str(tmp_path))
    marker = json.loads((tmp_path / "steps" / "w.done.json").read_text())
    assert marker["fingerprint"] == step.fingerprint() == rec["fingerprint"]
    assert run_step(step, str(tmp_path))["skipped"] is True


def test_a_binarys_marker_records_its_start_up_and_a_plain_command_none(tmp_path):
    # A binary through cli.run: start-up is measured when its main begins, and the variables
    # that ask for it do not reach the processes it starts.
    names = (STARTUP_FILE_ENV, STARTED_AT_ENV)
    code = f"""
import os, time
from transfer_tf.bin import cli
seen = [k for k in {names!r} if k in os.environ]
def main(argv):
    time.sleep(0.5)
    print("leaked", [k for k in {names!r} if k in os.environ], "seen", seen)
cli.run("probe", main)
"""
    rec = run_step(Step("probe", ("python", "-c", code)), str(tmp_path))
    assert 0 < rec["startup_s"] < rec["wall_time_s"] - 0.4  # main's own 0.5 s is not start-up
    assert (
        "leaked [] seen ['TRANSFER_TF_STARTUP_FILE', 'TRANSFER_TF_STARTED_AT']"
        in (tmp_path / "logs" / "probe.log").read_text()
    )
    marker = json.loads((tmp_path / "steps" / "probe.done.json").read_text())
    assert marker["startup_s"] == rec["startup_s"]
    assert not (tmp_path / "steps" / "probe.startup").exists()
    plain = run_step(_write_step("plain", tmp_path / "p.txt", "1"), str(tmp_path))
    assert plain["startup_s"] is None


def test_overhead_summary_sums_the_steps_that_ran():
    records = {
        "a": {"wall_time_s": 10.0, "startup_s": 4.0},
        "b": {"wall_time_s": 30.0, "startup_s": 6.0},
        "c": {"wall_time_s": 5.0, "startup_s": None},  # a plain command: no start-up known
        "d": {"wall_time_s": 99.0, "startup_s": 9.0, "skipped": True},  # done before
    }
    summary = overhead_summary(records, wall_s=32.0)
    assert summary == {
        "wall_time_s": 32.0,
        "steps_run": 3,
        "step_time_s": 45.0,
        "startup_s": 10.0,
        "startup_steps": 2,
        "startup_share": 10.0 / 45.0,
    }


def test_an_import_main_does_later_is_timed(tmp_path, monkeypatch):
    # As TensorFlow in the binaries that import it only inside main (records, export, features).
    import importlib
    import sys

    from transfer_tf.bin import cli

    (tmp_path / "slow_module_for_timer.py").write_text("import time\ntime.sleep(0.3)\nVALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    timer = cli._LateImportTimer("slow_module_for_timer", seen.append)
    sys.meta_path.insert(0, timer)
    try:
        module = importlib.import_module("slow_module_for_timer")
    finally:
        sys.modules.pop("slow_module_for_timer", None)
    assert module.VALUE == 7 and timer not in sys.meta_path
    assert len(seen) == 1 and 0.3 <= seen[0] < 10
