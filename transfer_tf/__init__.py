"""transfer_tf: "Do Better ImageNet Models Transfer Better?" (Kornblith, Shlens, Le 2019) in TF/Keras 3.

Subpackages: `models` (architectures, training settings, offline ImageNet weights), `data`
(dataset registry, TFRecords, input pipelines), `training` (Inception-style training, export),
`protocols` (logistic regression, fine-tuning, training from scratch, sweeps), `analysis`
(the paper's statistics, figures and report), `bin` (absl mains).
"""

import glob
import os


def _has_gpu() -> bool:
    """An NVIDIA device node (or WSL's GPU node) exists."""
    return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg"))


# TensorFlow's C++ INFO/WARNING lines drown the progress output of the binaries. Without a GPU,
# its CUDA plugin also logs "failed call to cuInit" at ERROR level on every start, and TensorFlow
# has no switch for that one line: there the C++ log keeps FATAL only (TensorFlow's errors still
# reach Python as exceptions, which the binaries print as one line). An explicit setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if _has_gpu() else "3")

__version__ = "0.1.0"
