"""Resumable sweeps: one JSON file per cell, written atomically, finished cells skipped on rerun.

A *cell* is a plain dict that says what to run: `protocol`, `model`, `architecture`, `settings`,
`dataset`, `metric`, `stage`, `hparams`, `seed`, `per_class` (the keys of the result schema in
docs/DESIGN.md that are known before running). `run_fn(cell)` runs it and returns the measured
keys (`val_metric`, `test_metric`, `steps`, `history`, and optionally `predictions`, a dict of
arrays such as `{"y_true": ..., "y_pred": ...}`). `run_cells` writes

    <results_dir>/<protocol>/<cell_id>.json               the cell + its results
    <results_dir>/<protocol>/<cell_id>.predictions.npz    per-example predictions (if any)

The JSON is written last, through a temporary file renamed into place, so its existence means
the cell finished: a sweep killed at any moment and rerun runs every cell exactly once to the end.
A cell whose JSON or predictions file does not read back whole counts as unfinished (a rerun
repairs it). File operations go through `transfer_tf.files` (local paths and gs:// URLs alike).

A cell's id says what it computes (its recipe); what it computes it *from* is its `inputs`: a
flat dict of fingerprints (the features files, the records' shard checksums, the starting
checkpoint) that the caller passes and the JSON records. A finished cell whose recorded inputs
differ is stale: the rerun says so in one line and computes it again (a JSON without `inputs`,
written before they were recorded, is kept). While a cell runs, its lock keeps a second
concurrent run of the same sweep out (`transfer_tf.files.exclusive_lock`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import re
import subprocess
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from transfer_tf.files import (
    atomic_write_bytes,
    dirname,
    exclusive_lock,
    exists,
    join,
    makedirs,
    read_bytes,
    sha256_file,
)

PROTOCOLS = ("logreg", "finetune", "scratch", "predictors")
STAGES = ("grid", "final")

# The result schema (docs/DESIGN.md), in the order the JSON files list them.
SCHEMA_KEYS = (
    "cell_id",
    "protocol",
    "model",
    "architecture",
    "settings",
    "dataset",
    "metric",
    "stage",
    "hparams",
    "per_class",
    "seed",
    "steps",
    "wall_time_s",
    "git_commit",
    "val_metric",
    "test_metric",
    "history",
    "predictions",
)
# Keys `run_fn` may return; everything else in a record comes from the cell or from the sweep.
RESULT_KEYS = ("val_metric", "test_metric", "steps", "history", "predictions")
PREDICTIONS_SUFFIX = ".predictions.npz"
# What a cell was computed from (a dict of fingerprints), recorded beside the schema keys.
INPUTS_KEY = "inputs"
# Errors of a predictions file that does not read back whole (truncated, overwritten, not a zip).
DAMAGED_FILE_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


# ---------------------------------------------------------------------------------------------
# Cells.


def _plain(value):
    """numpy scalars/arrays → Python values, so cells hash and serialise the same either way."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        value = float(value)
        return None if math.isnan(value) else value
    return value


def canonical_json(cell: Mapping) -> str:
    return json.dumps(_plain(cell), sort_keys=True, separators=(",", ":"), allow_nan=False)


def cell_id(cell: Mapping) -> str:
    """A stable id from the cell's whole content: `<protocol>-<model>-<dataset>-<stage>-<hash>`.

    The hash covers every key of the cell (canonical JSON, sorted keys, floats in shortest
    round-trip form), so two cells share an id only if they describe the same run; the prefix is
    only for people reading directory listings.
    """
    digest = hashlib.sha256(canonical_json(cell).encode()).hexdigest()[:16]
    words = [str(cell.get(k)) for k in ("protocol", "model", "dataset", "stage") if cell.get(k)]
    if cell.get("per_class") is not None:
        words.append(f"n{cell['per_class']}")
    prefix = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", w) for w in words) or "cell"
    return f"{prefix}-{digest}"


def cell_path(results_dir: str, cell: Mapping) -> str:
    return join(results_dir, str(cell.get("protocol", "unknown")), cell_id(cell) + ".json")


def read_predictions(path: str) -> dict[str, np.ndarray]:
    """Every array of a `<cell_id>.predictions.npz`, each read to its end (so the zip's CRC is
    checked); raises one of DAMAGED_FILE_ERRORS for a file that is not whole."""
    with np.load(io.BytesIO(read_bytes(path)), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def record_problem(path: str, record) -> str | None:
    """Why the cell JSON `record` read from `path` is not a finished cell, or None if it is."""
    if not isinstance(record, dict) or "cell_id" not in record:
        return "not a sweep cell"
    name = record.get("predictions")
    if name:
        try:
            read_predictions(join(dirname(path), name))
        except DAMAGED_FILE_ERRORS as e:
            return f"its predictions file {name} does not read ({type(e).__name__}: {e})"
    return None


def load_record(path: str) -> dict | None:
    """The finished record at `path`, or None if it is missing or unreadable, or its
    predictions file is (then the cell runs again)."""
    if not exists(path):
        return None
    try:
        record = json.loads(read_bytes(path))
    except (OSError, ValueError):
        return None
    return None if record_problem(path, record) else record


def fingerprint(value) -> str:
    """A short content hash of a JSON-able value (canonical JSON, sorted keys)."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]


def file_fingerprints(paths: Mapping[str, str]) -> dict[str, str]:
    """{name: short sha256 of the file's bytes}: the `inputs` of a sweep that reads `paths`
    (e.g. logistic regression's {"train.npz": ..., "val.npz": ..., "test.npz": ...})."""
    return {name: sha256_file(path)[:16] for name, path in paths.items()}


def changed_inputs(recorded, current) -> list[str]:
    """The names of the inputs whose fingerprints differ ([] when either side has none: a cell
    written before inputs were recorded, or a caller that records none)."""
    if not recorded or not current:
        return []
    names = sorted(set(recorded) | set(current))
    return [n for n in names if recorded.get(n) != current.get(n)]


def _cell_lock(results_dir: str, cell: Mapping):
    """The lock of one cell: `<results_dir>/.locks/<cell_id>.lock` (hidden: results.load and
    listings of the protocol folders never see it)."""
    cid = cell_id(cell)
    return exclusive_lock(
        join(results_dir, ".locks", cid + ".lock"),
        f"sweep cell {cid} in {results_dir}",
        "two runs of one sweep into one --results_dir would compute it twice; wait for the "
        "other run to finish, or pass another --results_dir",
    )


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the source tree this module runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit or None


def _format_hparams(hparams: Mapping) -> str:
    parts = []
    for name, value in hparams.items():
        parts.append(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}")
    return " ".join(parts)


def _format_metric(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    return buffer.getvalue()


def run_cell(
    cell: Mapping,
    results_dir: str,
    run_fn: Callable[[dict], Mapping],
    *,
    inputs: Mapping[str, str] | None = None,
) -> dict:
    """Runs one cell (unless it already finished from the same `inputs`) and returns its record;
    holds the cell's lock while it runs (`BusyError` if another process holds it)."""
    with _cell_lock(results_dir, cell):
        return _run_cell_locked(cell, results_dir, run_fn, inputs)


def _run_cell_locked(cell, results_dir, run_fn, inputs) -> dict:
    path = cell_path(results_dir, cell)
    record = load_record(path)
    if record is not None and not changed_inputs(record.get(INPUTS_KEY), inputs):
        return record
    cid = cell_id(cell)
    start = time.time()
    result = dict(run_fn(dict(cell)) or {})
    wall_time_s = time.time() - start
    unknown = set(result) - set(RESULT_KEYS)
    if unknown:
        raise ValueError(
            f"run_fn for cell {cid} returned keys {sorted(unknown)} outside the result schema "
            f"{list(RESULT_KEYS)}; put hyperparameters into the cell's 'hparams' instead."
        )
    makedirs(dirname(path))
    predictions = result.pop("predictions", None)
    predictions_name = None
    if predictions is not None:
        predictions_name = cid + PREDICTIONS_SUFFIX
        atomic_write_bytes(join(dirname(path), predictions_name), _npz_bytes(predictions))
    record = {key: None for key in SCHEMA_KEYS}
    record["history"] = []
    record.update(_plain(dict(cell)))
    record.update(_plain(result))
    record.update(
        cell_id=cid,
        wall_time_s=wall_time_s,
        git_commit=git_commit(),
        predictions=predictions_name,
    )
    if inputs:
        record[INPUTS_KEY] = dict(inputs)
    ordered = {k: record[k] for k in SCHEMA_KEYS}
    ordered.update({k: v for k, v in record.items() if k not in ordered})
    atomic_write_bytes(path, (json.dumps(ordered, indent=1, allow_nan=False) + "\n").encode())
    return ordered


def run_cells(
    cells: Iterable[Mapping],
    results_dir: str,
    run_fn: Callable[[dict], Mapping],
    *,
    progress: bool = True,
    inputs: Mapping[str, str] | None = None,
) -> list[dict]:
    """Runs every cell not yet finished under `results_dir`; returns all records in cell order.

    Cells with the same content run once. `inputs`: fingerprints of what every cell is computed
    from (see the module docstring); a finished cell with other recorded inputs runs again.
    `progress` prints one line per cell, e.g.
    `[3/45] logreg efficientnet_lite0 digits grid l2=0.001 C=0.56  val=0.9312 (0.4s)`.
    """
    cells = [dict(c) for c in cells]
    for cell in cells:
        if cell.get("protocol") not in PROTOCOLS:
            raise ValueError(f"cell {cell} has protocol {cell.get('protocol')!r}; use {PROTOCOLS}")
    records: dict[str, dict] = {}
    out = []
    for i, cell in enumerate(cells, 1):
        cid = cell_id(cell)
        done_before = records.get(cid) or load_record(cell_path(results_dir, cell))
        stale = done_before and changed_inputs(done_before.get(INPUTS_KEY), inputs)
        if stale and cid not in records:
            print(
                f"cell {cid}: {', '.join(stale)} changed since it ran; running it again", flush=True
            )
            done_before = None
        records[cid] = done_before or run_cell(cell, results_dir, run_fn, inputs=inputs)
        out.append(records[cid])
        if progress:
            print(_progress_line(i, len(cells), cell, records[cid], bool(done_before)), flush=True)
    return out


def _progress_line(i: int, n: int, cell: Mapping, record: Mapping, done_before: bool) -> str:
    words = [f"[{i}/{n}]"] + [str(cell.get(k)) for k in ("protocol", "model", "dataset", "stage")]
    if cell.get("per_class") is not None:
        words.append(f"per_class={cell['per_class']}")
    words.append(_format_hparams(cell.get("hparams") or {}))
    line = " ".join(w for w in words if w and w != "None")
    line += f"  val={_format_metric(record.get('val_metric'))}"
    line += f" test={_format_metric(record.get('test_metric'))}"
    wall = record.get("wall_time_s")
    line += " (done before)" if done_before else f" ({wall:.1f}s)"
    return line
