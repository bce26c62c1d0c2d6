"""Kedro datasets of the project."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset
from kedro_datasets.partitions import PartitionedDataset

from sparsetrain.core.data import BATCH_SUFFIXES, read_table


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


class BatchFolderDataset(PartitionedDataset):
    """A folder of batch files (``data/01_raw/batches/*.csv|*.parquet``) for ``data.source:
    batches``: Kedro's PartitionedDataset over :class:`TableDataset`, keeping only table files.

    Loads ``{}`` when the folder holds none (PartitionedDataset raises), so that pipelines run on
    other sources without it; the ingestion step then says what to add.
    """

    def __init__(
        self, path: str, separator: str | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        super().__init__(
            path=path,
            dataset={"type": f"{__name__}.TableDataset", "separator": separator},
            metadata=metadata,
        )

    def _list_partitions(self) -> list[str]:
        return [p for p in super()._list_partitions() if p.lower().endswith(BATCH_SUFFIXES)]

    def load(self) -> dict[str, Callable[[], pd.DataFrame]]:
        return super().load() if self._list_partitions() else {}
