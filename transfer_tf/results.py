"""Reading sweep results: every cell JSON under a results directory as one pandas DataFrame.

The files are the ones `transfer_tf.protocols.sweep.run_cells` writes (schema in docs/DESIGN.md):
`<results_dir>/<protocol>/<cell_id>.json`. Temporary files left by a killed writer (hidden names
that do not end in ".json") and unreadable or foreign JSON files are skipped, so loading is safe
while a sweep is still running.
"""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pandas as pd

from transfer_tf import files
from transfer_tf.protocols import sweep

HP_PREFIX = "hp."


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
    if not files.exists(results_dir) or not files.isdir(results_dir):
        raise FileNotFoundError(
            f"results directory {results_dir!r} does not exist; pass the --results_dir a sweep "
            "wrote to"
        )
    records = []
    for path in _cell_files(results_dir):
        try:
            record = json.loads(files.read_bytes(path))
        except (OSError, ValueError) as e:
            warnings.warn(f"skipping unreadable result file {path}: {e}", stacklevel=2)
            continue
        if not isinstance(record, dict) or "cell_id" not in record or "protocol" not in record:
            continue  # e.g. a features manifest.json that happens to live under the directory
        record["_path"] = path
        records.append(record)
    return records


def load(results_dir: str) -> pd.DataFrame:
    """All cells as one DataFrame, one row per cell.

    Columns: the schema keys (`cell_id`, `protocol`, `model`, …, `history`, `predictions`), with
    `hparams` flattened to `hp.<name>` columns (NaN where a cell lacks that hyperparameter), plus
    `predictions_path`: the full path of the predictions file, or None.
    """
    rows = []
    for record in load_records(results_dir):
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
        return pd.DataFrame(columns=columns)
    hp_columns = sorted(c for c in frame.columns if c.startswith(HP_PREFIX))
    extra = [c for c in frame.columns if c not in columns and c not in hp_columns]
    return frame[columns + hp_columns + extra].reset_index(drop=True)


def load_predictions(path: str) -> dict[str, np.ndarray]:
    """The arrays of one `<cell_id>.predictions.npz` (e.g. a DataFrame's `predictions_path`)."""
    with np.load(io.BytesIO(files.read_bytes(path))) as data:
        return {k: data[k] for k in data.files}
