"""What `transfer-export` records beside a SavedModel (architecture, classes, input size and
scaling, settings, where the weights came from): `<export_dir>/assets.extra/transfer_tf_export.json`
(the SavedModel convention for files TensorFlow does not read)."""

from __future__ import annotations

import json

from transfer_tf import files

EXPORT_INFO = "transfer_tf_export.json"


def export_info_path(export_dir: str) -> str:
    return files.join(export_dir, "assets.extra", EXPORT_INFO)


def write_export_info(export_dir: str, details: dict) -> str:
    path = export_info_path(export_dir)
    files.makedirs(files.dirname(path))
    files.atomic_write_json(path, details, indent=1, sort_keys=True)
    return path


def read_export_info(export_dir: str) -> dict:
    """What transfer-export recorded about a SavedModel (architecture, classes, size, settings)."""
    path = export_info_path(export_dir)
    if not files.exists(path):
        raise FileNotFoundError(
            f"{path} is missing: only SavedModels written by transfer-export name the registry "
            "architecture that fine-tuning rebuilds; pass --init_model_dir or --model instead"
        )
    return json.loads(files.read_bytes(path))
