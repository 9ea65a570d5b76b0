"""Reading sweep results: every cell JSON under a results directory as one pandas DataFrame.

The files are the ones `transfer_tf.protocols.sweep.run_cells` writes (schema in docs/DESIGN.md):
`<results_dir>/<protocol>/<cell_id>.json`. Temporary files left by a killed writer (hidden names
that do not end in ".json") and foreign JSON files are skipped, so loading is safe while a sweep
is still running. A cell whose JSON or predictions file does not read back whole is left out
and listed in `frame.attrs[UNREADABLE]` (its sweep, rerun, computes it again).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd

from transfer_tf import files
from transfer_tf.protocols import sweep

HP_PREFIX = "hp."
# `load(...).attrs[UNREADABLE]`: [(path, why)] of the cell files left out because they do not read.
UNREADABLE = "unreadable_cells"


def _cell_files(results_dir: str, depth: int = 2) -> list[str]:
    """`*.json` cell files in `results_dir` and up to `depth` levels of subdirectories."""
    paths = []
    for name in sorted(files.listdir(results_dir)):
        path = files.join(results_dir, name)
        if name.startswith("."):
            continue
        if name.endswith(".json") and not files.isdir(path):
            paths.append(path)
        elif depth > 0 and files.isdir(path):
            paths.extend(_cell_files(path, depth - 1))
    return paths


def load_records(results_dir: str) -> list[dict]:
    """Every finished cell record under `results_dir` (a results root or one protocol folder)."""
    records, _ = _read_records(results_dir)
    return records


def _read_records(results_dir: str) -> tuple[list[dict], list[tuple[str, str]]]:
    """(finished records, [(path, why)] of cell files that do not read: a damaged JSON or a
    damaged predictions file; a rerun of their sweep computes them again)."""
    if not files.exists(results_dir) or not files.isdir(results_dir):
        raise FileNotFoundError(
            f"results directory {results_dir!r} does not exist; pass the --results_dir a sweep "
            "wrote to"
        )
    records, unreadable = [], []
    for path in _cell_files(results_dir):
        try:
            record = json.loads(files.read_bytes(path))
        except (OSError, ValueError) as e:
            warnings.warn(f"skipping unreadable result file {path}: {e}", stacklevel=2)
            unreadable.append((path, f"{type(e).__name__}: {e}"))
            continue
        if not isinstance(record, dict) or "cell_id" not in record or "protocol" not in record:
            continue  # e.g. a features manifest.json that happens to live under the directory
        problem = sweep.record_problem(path, record)
        if problem:
            warnings.warn(f"skipping result file {path}: {problem}", stacklevel=2)
            unreadable.append((path, problem))
            continue
        record["_path"] = path
        records.append(record)
    return records, unreadable


def load(results_dir: str) -> pd.DataFrame:
    """All cells as one DataFrame, one row per cell.

    Columns: the schema keys (`cell_id`, `protocol`, `model`, …, `history`, `predictions`), with
    `hparams` flattened to `hp.<name>` columns (NaN where a cell lacks that hyperparameter), plus
    `predictions_path`: the full path of the predictions file, or None.
    """
    records, unreadable = _read_records(results_dir)
    rows = []
    for record in records:
        path = record.pop("_path")
        row = {k: record.get(k) for k in sweep.SCHEMA_KEYS if k != "hparams"}
        row.update({k: v for k, v in record.items() if k not in sweep.SCHEMA_KEYS})
        for name, value in (record.get("hparams") or {}).items():
            row[HP_PREFIX + name] = value
        predictions = record.get("predictions")
        row["predictions_path"] = (
            files.join(files.dirname(path), predictions) if predictions else None
        )
        rows.append(row)
    columns = [k for k in sweep.SCHEMA_KEYS if k != "hparams"] + ["predictions_path"]
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=columns)
    else:
        hp_columns = sorted(c for c in frame.columns if c.startswith(HP_PREFIX))
        extra = [c for c in frame.columns if c not in columns and c not in hp_columns]
        frame = frame[columns + hp_columns + extra].reset_index(drop=True)
    frame.attrs[UNREADABLE] = unreadable
    return frame


def load_predictions(path: str) -> dict[str, np.ndarray]:
    """The arrays of one `<cell_id>.predictions.npz` (e.g. a DataFrame's `predictions_path`)."""
    return sweep.read_predictions(path)
