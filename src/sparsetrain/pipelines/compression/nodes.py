"""Compression: fit the reducer on the training split only, then project every split."""

from __future__ import annotations

from typing import Any

from sparsetrain.config import CompressionConfig, DataConfig
from sparsetrain.core.data import Splits
from sparsetrain.recipe import compress_splits


def compress(standardized_splits: Splits, compression: CompressionConfig, data: DataConfig) -> tuple[Any, dict[str, Any], Splits]:
    """The reducer (None for ``method: none``), its summary, and the projected splits."""
    return compress_splits(standardized_splits, compression, data.seed)
