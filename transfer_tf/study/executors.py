"""Executors run a study's steps in dependency order: locally in a pool, or as Ray tasks.

Both call `steps.run_step`, so a step does the same thing wherever it runs; results land in the
same idempotent per-cell files, which is what makes a local run and a cluster run read alike.
"""

from __future__ import annotations

import concurrent.futures
import time

from transfer_tf.study.steps import (
    Step,
    StepFailed,
    run_step,
    stop_running_steps,
    topological_order,
)


def _log(msg: str) -> None:
    print(f"[study] {msg}", flush=True)


class LocalExecutor:
    """Runs up to `max_concurrent` steps at once, each in its own process (the binary's)."""

    def __init__(self, max_concurrent: int = 1):
        if max_concurrent < 1:
            raise ValueError(f"--max_concurrent must be >= 1, got {max_concurrent}")
        self.max_concurrent = max_concurrent

    def run(self, steps: list[Step], state_dir: str) -> dict[str, dict]:
        order = topological_order(steps)
        with concurrent.futures.ThreadPoolExecutor(self.max_concurrent) as pool:
            try:
                return self._run(pool, order, state_dir)
            except KeyboardInterrupt:
                # Ctrl-C / SIGINT: stop the step commands first (leaving the pool waits for its
                # threads, which wait for their commands); the binary then says so in one line.
                _log(f"interrupted: stopped {stop_running_steps()} running step(s)")
                raise

    def _run(self, pool, order: list[Step], state_dir: str) -> dict[str, dict]:
        done: dict[str, dict] = {}
        pending = list(order)
        running: dict[concurrent.futures.Future, Step] = {}
        start = time.time()
        failure: BaseException | None = None
        while pending or running:
            if failure is None:
                for step in [s for s in pending if all(d in done for d in s.deps)]:
                    if len(running) >= self.max_concurrent:
                        break
                    pending.remove(step)
                    running[pool.submit(run_step, step, state_dir)] = step
            if not running:
                break
            finished, _ = concurrent.futures.wait(
                running, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in finished:
                step = running.pop(future)
                try:
                    done[step.name] = future.result()
                except BaseException as e:  # noqa: BLE001 - reported after running steps end
                    failure = failure or e
                    continue
                rec = done[step.name]
                how = "already done" if rec.get("skipped") else f"{rec['wall_time_s']:.0f} s"
                if not rec.get("skipped") and rec.get("startup_s") is not None:
                    how += f", start-up {rec['startup_s']:.0f} s"
                _log(
                    f"{len(done)}/{len(order)} {step.name} ({how}); "
                    f"elapsed {time.time() - start:.0f} s"
                )
        if failure is not None:
            raise failure
        return done


class RayExecutor:
    """Submits each step as a Ray task; a task whose worker dies is retried (`max_retries`).

    A step's deps are passed as object refs, so Ray starts it only when they have finished. A step
    whose command fails (non-zero exit) is not retried: that is a bug to read in its log, not a
    lost worker.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        max_retries: int = 3,
        cpus_per_step: float | None = None,
        gpus_per_step: float | None = None,
    ):
        self.address = address
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self.cpus_per_step = cpus_per_step
        self.gpus_per_step = gpus_per_step

    def _connect(self):
        try:
            import ray
        except ImportError as e:
            raise ImportError(
                "--executor=ray needs Ray: pip install 'transfer_tf[ray]' (scripts/setup.sh "
                "installs it)"
            ) from e
        if not ray.is_initialized():
            if self.address in (None, "", "local"):
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=self.address, log_to_driver=False)
        return ray

    def run(self, steps: list[Step], state_dir: str) -> dict[str, dict]:
        ray = self._connect()
        order = topological_order(steps)

        def _run(step_dict: dict, state_dir: str, *deps) -> dict:
            return run_step(Step.from_dict(step_dict), state_dir)

        remote = ray.remote(_run)
        refs = {}
        for step in order:
            refs[step.name] = remote.options(
                name=step.name,
                num_cpus=self.cpus_per_step if self.cpus_per_step is not None else step.num_cpus,
                num_gpus=self.gpus_per_step if self.gpus_per_step is not None else step.num_gpus,
                max_retries=self.max_retries,
                retry_exceptions=False,
            ).remote(step.to_dict(), state_dir, *[refs[d] for d in step.deps])
        done: dict[str, dict] = {}
        start = time.time()
        name_of = {ref: name for name, ref in refs.items()}
        remaining = list(refs.values())
        while remaining:
            try:
                ready, remaining = ray.wait(remaining, num_returns=1)
            except KeyboardInterrupt:
                for ref in remaining:  # their commands die with their workers
                    ray.cancel(ref, force=True)
                raise
            name = name_of[ready[0]]
            try:
                done[name] = ray.get(ready[0])
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if isinstance(getattr(e, "cause", None), StepFailed) else e
                raise StepFailed(f"step {name!r} failed on Ray: {cause}") from e
            _log(f"{len(done)}/{len(order)} {name} (ray); elapsed {time.time() - start:.0f} s")
        return done


def make_executor(name: str, **kwargs):
    """`local` or `ray`, with the keyword arguments of that executor's constructor."""
    executors = {"local": LocalExecutor, "ray": RayExecutor}
    if name not in executors:
        raise ValueError(f"--executor must be one of {sorted(executors)}, got {name!r}")
    return executors[name](**kwargs)
