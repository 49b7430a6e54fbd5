"""Shared test setup."""

from __future__ import annotations

import jax
import pytest


@pytest.fixture(autouse=True)
def _float32_matmuls():
    """Full float32 matmuls and convolutions in every test (GPUs default to TF32), so that the
    equivalences against NumPy, SciPy and XLA references hold to their tolerances on any
    backend; no effect on CPU."""
    with jax.default_matmul_precision("highest"):
        yield
