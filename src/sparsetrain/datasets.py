"""Kedro datasets of the project."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset

from sparsetrain.core.data import read_table


class TableDataset(AbstractDataset[pd.DataFrame, pd.DataFrame]):
    """A CSV or Parquet file (chosen by its suffix) for ``data.source: table``.

    ``separator`` replaces a CSV's ',' (e.g. ``";"``), as ``data.separator`` does for ``data.path``.
    Loads ``None`` when the file does not exist, so that the ingestion pipeline can run on other
    sources without it; the ingestion node then says which setting to fill in.
    """

    def __init__(
        self, filepath: str, separator: str | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        self._filepath = Path(filepath)
        self._separator = separator
        self.metadata = metadata

    def load(self) -> pd.DataFrame | None:
        return read_table(self._filepath, self._separator) if self._filepath.exists() else None

    def save(self, data: pd.DataFrame) -> None:
        raise NotImplementedError("TableDataset is read-only: it is the user's raw data")

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "separator": self._separator}

    def _exists(self) -> bool:
        return self._filepath.exists()
