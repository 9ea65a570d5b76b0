"""transfer_tf: "Do Better ImageNet Models Transfer Better?" (Kornblith, Shlens, Le 2019) in TF/Keras 3.

Subpackages: `models` (architectures, training settings, offline ImageNet weights), `data`
(dataset registry, TFRecords, input pipelines), `training` (Inception-style training, export),
`protocols` (logistic regression, fine-tuning, training from scratch, sweeps), `analysis`
(the paper's statistics, figures and report), `bin` (absl mains).
"""

import os

# TensorFlow's C++ INFO/WARNING lines drown the progress output of the binaries.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
