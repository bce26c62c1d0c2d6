import pandas as pd
import pytest
from kedro.io import DatasetError

from sparsetrain.datasets import TableDataset
from sparsetrain.errors import SparsetrainError


def test_table_dataset_reads_with_its_separator(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [1.0, 2.0], "label": ["x", "y"]}).to_csv(path, index=False, sep=";")
    frame = TableDataset(str(path), separator=";").load()
    assert list(frame.columns) == ["a", "label"] and frame["a"].tolist() == [1.0, 2.0]
    assert list(TableDataset(str(path)).load().columns) == ["a;label"]  # default ','
    assert TableDataset(str(path), separator=";")._describe()["separator"] == ";"


def test_table_dataset_missing_file_loads_none_and_directory_is_refused(tmp_path):
    assert TableDataset(str(tmp_path / "nope.csv")).load() is None
    with pytest.raises(DatasetError) as info:  # Kedro wraps load errors; the CLI shows the cause
        TableDataset(str(tmp_path)).load()
    assert isinstance(info.value.__cause__, SparsetrainError)
    assert str(info.value.__cause__) == f"data.path '{tmp_path}' is a directory; give a CSV or Parquet file"
