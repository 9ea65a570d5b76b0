"""How much of the quick mini-study's wall time is process start-up (each step is its own
process and pays its imports, TensorFlow's above all), and whether two study folders hold the
same results.

    python benchmarks/bench_study_overhead.py run /tmp/quick-after     # the quick study, timed
    python benchmarks/bench_study_overhead.py summary /tmp/quick-after # from its step markers
    python benchmarks/bench_study_overhead.py compare /tmp/quick-before /tmp/quick-after
    python benchmarks/bench_study_overhead.py schedule /tmp/quick-before  # orders, replayed

`run` is `transfer-study --flagfile=flags/demo/quick.cfg --study_dir=DIR` (the command of
tests/test_study_demo.py) with the load average before and after, then `summary`. `summary`
reads the step markers: the steps' span (first start to last finish), summed step time, summed
start-up (`startup_s`, recorded since 2026-12-01; markers before have none) and its share, and
each step's start, time and start-up. `compare` checks every sweep cell JSON (cell_id,
val_metric, test_metric) and the study's CSV results (model table, report tables; their
wall-time columns left out) are equal in both folders; exit status 1 when not. `schedule` replays a finished study's step times on
--max_concurrent=2 slots in the executor's order (topological) and in critical-path orders (the
longest chain to the end first, counted in steps or in measured seconds), beside the lower
bound (summed time / slots, or the longest chain). Figures: docs/measurements/2026-12-01-study-overhead.md.
"""

from __future__ import annotations

import csv
import glob
import heapq
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = [sys.executable, "-m", "transfer_tf.bin.study", "--flagfile=flags/demo/quick.cfg"]


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def markers(study_dir: str) -> list[dict]:
    records = []
    for path in glob.glob(os.path.join(study_dir, "steps", "*.done.json")):
        with open(path) as f:
            records.append(json.load(f))
    return sorted(records, key=lambda r: r["finished_at"] - r["wall_time_s"])


def summary(study_dir: str) -> dict:
    records = [r for r in markers(study_dir) if not r.get("skipped")]
    if not records:
        raise SystemExit(f"{study_dir}: no step markers (steps/*.done.json)")
    first = min(r["finished_at"] - r["wall_time_s"] for r in records)
    last = max(r["finished_at"] for r in records)
    step_s = sum(r["wall_time_s"] for r in records)
    startups = [r["startup_s"] for r in records if r.get("startup_s") is not None]
    print(f"{'step':58s} {'start':>7s} {'time':>7s} {'start-up':>9s}")
    for r in records:
        start = r["finished_at"] - r["wall_time_s"] - first
        up = f"{r['startup_s']:9.1f}" if r.get("startup_s") is not None else f"{'-':>9s}"
        print(f"{r['name']:58s} {start:7.0f} {r['wall_time_s']:7.1f} {up}")
    out = {
        "steps": len(records),
        "span_s": last - first,
        "step_time_s": step_s,
        "startup_s": sum(startups) if startups else None,
        "startup_steps": len(startups),
    }
    line = (
        f"{study_dir}: {len(records)} steps; span (first step start to last finish) "
        f"{out['span_s']:.0f} s; summed step time {step_s:.0f} s"
    )
    if startups:
        out["startup_share"] = out["startup_s"] / step_s
        line += (
            f"; summed start-up {out['startup_s']:.0f} s over {len(startups)} steps = "
            f"{100 * out['startup_share']:.1f}% of step time"
        )
    print(line)
    return out


def run(study_dir: str) -> None:
    before = load_average()
    start = time.time()
    proc = subprocess.run([*COMMAND, f"--study_dir={study_dir}"], cwd=ROOT)
    wall = time.time() - start
    print(
        f"quick study: {wall:.0f} s wall (exit {proc.returncode}); load average before "
        f"{before}, after {load_average()}"
    )
    summary(study_dir)
    if proc.returncode != 0:
        raise SystemExit(proc.returncode)


def cells(study_dir: str) -> dict[str, tuple]:
    out = {}
    for path in glob.glob(os.path.join(study_dir, "results", "**", "*.json"), recursive=True):
        with open(path) as f:
            try:
                cell = json.load(f)
            except ValueError:
                continue
        if isinstance(cell, dict) and "cell_id" in cell:
            out[cell["cell_id"]] = (cell.get("val_metric"), cell.get("test_metric"))
    return out


def timing_column(name: str) -> bool:
    """A column that holds a measured time (the predictors' cost), not a result."""
    return "wall_time" in name or name == "fraction_of_logreg"


def csv_results(study_dir: str) -> dict[str, list]:
    """Each CSV result without its timing columns."""
    paths = [os.path.join(study_dir, "model_table.csv")]
    paths += glob.glob(os.path.join(study_dir, "report", "*.csv"))
    out = {}
    for path in paths:
        if os.path.exists(path):
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            keep = [i for i, name in enumerate(rows[0] if rows else []) if not timing_column(name)]
            out[os.path.relpath(path, study_dir)] = [[r[i] for i in keep] for r in rows]
    return out


def compare(dir_a: str, dir_b: str) -> bool:
    a, b = cells(dir_a), cells(dir_b)
    same = True
    if set(a) != set(b):
        same = False
        print(
            f"cell ids differ: only in {dir_a}: {sorted(set(a) - set(b))}; "
            f"only in {dir_b}: {sorted(set(b) - set(a))}"
        )
    diff = [c for c in sorted(set(a) & set(b)) if a[c] != b[c]]
    for c in diff:
        print(f"  {c}: {a[c]} != {b[c]}")
    same &= not diff
    print(
        f"sweep cells: {len(a)} and {len(b)}; {len(set(a) & set(b)) - len(diff)} equal "
        "(cell_id, val_metric, test_metric)"
    )
    ca, cb = csv_results(dir_a), csv_results(dir_b)
    for name in sorted(set(ca) | set(cb)):
        equal = ca.get(name) == cb.get(name)
        same &= equal
        print(f"  {name}: {'equal' if equal else 'DIFFERENT'}")
    print("results identical" if same else "results DIFFER")
    return same


def planned_steps() -> list:
    """The quick study's steps, as `--dry_run` plans them (names and deps)."""
    from transfer_tf.study.steps import Step

    out = subprocess.run(
        [*COMMAND, "--study_dir=/tmp/bench-study-overhead-plan", "--dry_run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    steps = []
    for line in out.splitlines():
        if " <- " in line and not line.startswith(" "):
            name, deps = line.split(" <- ")
            deps = () if deps.strip() == "-" else tuple(d.strip() for d in deps.split(","))
            steps.append(Step(name.strip(), ("python",), deps))
    return steps


def replay(order: list, seconds: dict[str, float], slots: int) -> float:
    """The executor's loop with known step times: start ready steps in `order` while a slot is
    free; returns when the last one ends."""
    done, running, now, pending = set(), [], 0.0, list(order)
    while pending or running:
        for step in [s for s in pending if all(d in done for d in s.deps)]:
            if len(running) >= slots:
                break
            pending.remove(step)
            heapq.heappush(running, (now + seconds[step.name], step.name))
        now, name = heapq.heappop(running)
        done.add(name)
    return now


def critical_path_order(steps: list, weight) -> tuple[list, float]:
    from transfer_tf.study.steps import topological_order

    order = topological_order(steps)
    dependents = {s.name: [] for s in steps}
    for s in steps:
        for d in s.deps:
            dependents[d].append(s.name)
    chain = {}
    for s in reversed(order):
        chain[s.name] = weight(s) + max((chain[d] for d in dependents[s.name]), default=0)
    return sorted(order, key=lambda s: -chain[s.name]), max(chain.values())


def schedule(study_dir: str, slots: int = 2) -> None:
    from transfer_tf.study.steps import topological_order

    seconds = {r["name"]: r["wall_time_s"] for r in markers(study_dir)}
    steps = planned_steps()
    missing = [s.name for s in steps if s.name not in seconds]
    if missing:
        raise SystemExit(f"{study_dir}: no step times for {missing}")
    by_count, _ = critical_path_order(steps, lambda s: 1)
    by_time, longest = critical_path_order(steps, lambda s: seconds[s.name])
    bound = max(sum(seconds.values()) / slots, longest)
    print(f"{study_dir} replayed on {slots} slots:")
    print(
        f"  topological (the executor's order): {replay(topological_order(steps), seconds, slots):.0f} s"
    )
    print(f"  critical path in steps:             {replay(by_count, seconds, slots):.0f} s")
    print(f"  critical path in measured seconds:  {replay(by_time, seconds, slots):.0f} s")
    print(f"  lower bound:                        {bound:.0f} s")


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[1] in ("run", "summary", "schedule"):
        {"run": run, "summary": summary, "schedule": schedule}[argv[1]](os.path.abspath(argv[2]))
    elif len(argv) == 4 and argv[1] == "compare":
        raise SystemExit(0 if compare(argv[2], argv[3]) else 1)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
