"""A study as a graph of steps: each step is one run of one of our binaries with its flags.

`transfer-study` never reimplements a binary: it plans command lines, and an executor (local
process pool or Ray) runs them in dependency order. Binaries are themselves idempotent (sweeps skip
finished cells), and a step that succeeded leaves a marker, so a rerun of a half-finished study
starts where it stopped without even paying the TensorFlow import of finished steps.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import graphlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

from transfer_tf.files import atomic_write_json, exclusive_lock

# How a step's binary reports its start-up (process start until its `main` begins: interpreter,
# imports, flag parsing; plus TensorFlow's import where `main` does it) to `run_step`: the parent
# passes the time it started the command and a file, `cli.run` writes the seconds there, and the
# marker keeps them as `startup_s` (docs/measurements/2026-12-01-study-overhead.md).
STARTUP_FILE_ENV = "TRANSFER_TF_STARTUP_FILE"
STARTED_AT_ENV = "TRANSFER_TF_STARTED_AT"

# Console-script name -> module, so a step runs with the current interpreter on any worker,
# whether or not the console scripts are on PATH there.
BINARIES = {
    "transfer-make-tfrecords": "transfer_tf.bin.make_tfrecords",
    "transfer-pretrain": "transfer_tf.bin.pretrain",
    "transfer-export": "transfer_tf.bin.export",
    "transfer-extract-features": "transfer_tf.bin.extract_features",
    "transfer-logreg": "transfer_tf.bin.logreg",
    "transfer-finetune": "transfer_tf.bin.finetune",
    "transfer-scratch": "transfer_tf.bin.scratch",
    "transfer-analyze": "transfer_tf.bin.analyze",
    "transfer-predictors": "transfer_tf.bin.predictors",
}


class StepFailed(RuntimeError):
    """A step's command exited non-zero. The message's first line names the step, its error
    line and its log (what a binary prints as its one error line); the rest is the log's end."""


# The commands running now (all threads), so that an interrupted study can stop them.
_RUNNING: set[subprocess.Popen] = set()
_RUNNING_LOCK = threading.Lock()
_STOPPING = threading.Event()  # set once the study is interrupted: no new command starts


def stop_running_steps(grace_s: float = 10.0) -> int:
    """Stops every step command still running (SIGTERM, then SIGKILL after `grace_s`); returns
    how many there were. Their markers are not written, so a rerun runs them again."""
    with _RUNNING_LOCK:
        _STOPPING.set()
        procs = list(_RUNNING)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.time() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return len(procs)


def study_lock(study_dir: str):
    """The lock of a study folder, held while a transfer-study runs in it (`BusyError` when
    another one does)."""
    return exclusive_lock(
        os.path.join(study_dir, ".study.lock"),
        f"study folder {study_dir}",
        "another transfer-study runs in it; wait for it to finish (or stop it), then rerun this "
        "command to resume",
    )


def last_error_line(log_text: str) -> str | None:
    """A binary's one error line (`<binary>: error: ...`) in a step's log, else the last line."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    if errors:
        return errors[-1]
    return lines[-1] if lines else None


@dataclasses.dataclass(frozen=True)
class Step:
    """One command of a study. `argv[0]` is a binary name from BINARIES (or `python`)."""

    name: str
    argv: tuple[str, ...]
    deps: tuple[str, ...] = ()
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def command(self) -> list[str]:
        head, *rest = self.argv
        if head in BINARIES:
            return [sys.executable, "-m", BINARIES[head], *rest]
        if head == "python":
            return [sys.executable, *rest]
        raise ValueError(
            f"step {self.name!r}: unknown binary {head!r}; expected one of {sorted(BINARIES)}"
        )

    def fingerprint(self) -> str:
        """Hash of the command line and of every flagfile it reads (nested ones too), so editing
        a flagfile makes its steps run again."""
        content = [list(self.argv), flagfile_contents(self.argv)]
        return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Step:
        return cls(
            name=d["name"],
            argv=tuple(d["argv"]),
            deps=tuple(d.get("deps", ())),
            num_cpus=d.get("num_cpus", 1.0),
            num_gpus=d.get("num_gpus", 0.0),
        )


def flagfile_contents(argv, seen: frozenset = frozenset()) -> list[list[str]]:
    """[path, text] of each `--flagfile=` in argv and in the flagfiles it names, depth first; a
    missing file counts as empty (the binary itself reports it)."""
    out = []
    for arg in argv:
        if not arg.startswith("--flagfile="):
            continue
        path = arg.split("=", 1)[1]
        if path in seen:
            continue
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            text = ""
        out.append([path, text])
        out += flagfile_contents([line.strip() for line in text.splitlines()], seen | {path})
    return out


def topological_order(steps: list[Step]) -> list[Step]:
    """Steps ordered so that every step comes after its deps; errors name the bad step."""
    by_name: dict[str, Step] = {}
    for step in steps:
        if step.name in by_name:
            raise ValueError(f"two steps are named {step.name!r}")
        by_name[step.name] = step
    for step in steps:
        missing = [d for d in step.deps if d not in by_name]
        if missing:
            raise ValueError(f"step {step.name!r} depends on unknown steps {missing}")
    sorter = graphlib.TopologicalSorter({step.name: step.deps for step in steps})
    try:
        return [by_name[name] for name in sorter.static_order()]
    except graphlib.CycleError as e:
        raise ValueError(f"steps form a cycle: {' -> '.join(e.args[1])}") from None


def _die_with_parent() -> None:
    # If the worker that runs a step is killed (a Ray worker, a killed study), its command must
    # die too, or a retried step would race an orphan writing the same files.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def marker_path(state_dir: str, step: Step) -> str:
    return os.path.join(state_dir, "steps", f"{step.name}.done.json")


def _read_marker(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_done(state_dir: str, step: Step) -> bool:
    """The step finished with this very command (and flagfiles), after each of its deps last
    finished: a dependency that ran again since makes the step stale (e.g. new results that the
    analysis has not seen)."""
    marker = _read_marker(marker_path(state_dir, step))
    if marker is None or marker.get("fingerprint") != step.fingerprint():
        return False
    finished = marker.get("finished_at", 0.0)
    for dep in step.deps:
        dep_marker = _read_marker(os.path.join(state_dir, "steps", f"{dep}.done.json"))
        if dep_marker is not None and dep_marker.get("finished_at", 0.0) > finished:
            return False
    return True


def run_step(step: Step, state_dir: str, *, env: dict | None = None) -> dict:
    """Runs one step (skipped when its marker says it is done); returns its record.

    The command's output goes to `<state_dir>/logs/<name>.log`; a failure raises StepFailed with
    the last lines of that log.
    """
    if is_done(state_dir, step):
        return {**_read_marker(marker_path(state_dir, step)), "skipped": True}
    os.makedirs(os.path.join(state_dir, "logs"), exist_ok=True)
    os.makedirs(os.path.join(state_dir, "steps"), exist_ok=True)
    log_path = os.path.join(state_dir, "logs", f"{step.name}.log")
    startup_path = os.path.join(state_dir, "steps", f"{step.name}.startup")
    with contextlib.suppress(FileNotFoundError):
        os.remove(startup_path)  # a killed earlier attempt's
    start = time.time()
    # Appended, so a step retried after a lost worker keeps every attempt's log.
    with open(log_path, "a") as log:
        log.write(f"=== attempt at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        log.write("$ " + " ".join(step.argv) + "\n")
        log.flush()
        # TF_CPP_MIN_LOG_LEVEL: the study's own (transfer_tf/__init__.py sets it).
        with _RUNNING_LOCK:
            if _STOPPING.is_set():
                raise StepFailed(f"step {step.name!r} not started: the study was interrupted")
            started_at = time.time()
            proc = subprocess.Popen(
                step.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={
                    **os.environ,
                    **(env or {}),
                    STARTUP_FILE_ENV: startup_path,
                    STARTED_AT_ENV: repr(started_at),
                },
                preexec_fn=_die_with_parent,
            )
            _RUNNING.add(proc)
        try:
            proc.wait()
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(proc)
    wall = time.time() - start
    startup = read_startup(startup_path)
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = "".join(f.readlines()[-25:])  # the last attempt's end
        error = last_error_line(tail) or f"exit status {proc.returncode}"
        raise StepFailed(
            f"step {step.name!r} exited with {proc.returncode} after {wall:.0f} s ({error}); its "
            f"log: {log_path}; fix that and rerun the study to resume\n{tail}"
        )
    return write_marker(state_dir, step, wall_time_s=wall, startup_s=startup, log=log_path)


def read_startup(path: str) -> float | None:
    """The start-up seconds a step's binary wrote (and removes the file); None when it wrote
    none (a command that is not one of our binaries, or one that died before its main)."""
    try:
        with open(path) as f:
            text = f.read()
        os.remove(path)
        return float(text)
    except (OSError, ValueError):
        return None


def overhead_summary(records: dict[str, dict], wall_s: float) -> dict:
    """The study's wall time beside its steps' summed time and summed start-up (steps that ran
    now; skipped ones excluded)."""
    ran = [r for r in records.values() if not r.get("skipped")]
    step_s = sum(r.get("wall_time_s", 0.0) for r in ran)
    startups = [r["startup_s"] for r in ran if r.get("startup_s") is not None]
    startup_s = sum(startups)
    return {
        "wall_time_s": wall_s,
        "steps_run": len(ran),
        "step_time_s": step_s,
        "startup_s": startup_s,
        "startup_steps": len(startups),
        "startup_share": startup_s / step_s if step_s > 0 else 0.0,
    }


def overhead_line(summary: dict) -> str:
    return (
        f"wall time {summary['wall_time_s']:.0f} s; {summary['steps_run']} steps ran for "
        f"{summary['step_time_s']:.0f} s summed, of which start-up (process start to main: "
        f"imports, flag parsing, TensorFlow's import) {summary['startup_s']:.0f} s = "
        f"{100 * summary['startup_share']:.0f}%"
    )


def write_marker(state_dir: str, step: Step, **fields) -> dict:
    """Marks `step` done now (atomically); returns the marker's record."""
    record = {
        "name": step.name,
        "fingerprint": step.fingerprint(),
        "finished_at": time.time(),
        "skipped": False,
        **fields,
    }
    os.makedirs(os.path.join(state_dir, "steps"), exist_ok=True)
    atomic_write_json(marker_path(state_dir, step), record)
    return record
