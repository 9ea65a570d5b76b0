"""Shared pytest configuration: quiet TensorFlow, no network, session-scoped heavy fixtures."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never download: tensorflow-datasets must not reach out for metadata either.
os.environ.setdefault("TFDS_DISABLE_GCS", "1")
os.environ.setdefault("NO_GCE_CHECK", "true")
