import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Lasso
from sklearn.neighbors import KNeighborsClassifier

from sparsetrain.config import DataConfig
from sparsetrain.core.data import (
    FASHION_MNIST_DIRS,
    SOURCES,
    Dataset,
    Standardizer,
    dataset_from_frame,
    load_dataset,
    load_source_data,
    load_digits_dataset,
    load_fashion_mnist,
    make_synthetic,
    read_table,
    split_dataset,
    validate_dataset,
)
from sparsetrain.errors import SparsetrainError


def _frame(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.integers(0, 5, size=n),
            "label": np.where(np.arange(n) % 2 == 0, "cat", "dog"),
        }
    )


# ---------------------------------------------------------------------------------- sources


def test_digits_shape_dtype_and_image_shape():
    ds = load_digits_dataset()
    assert ds.X.shape == (1797, 64) and ds.X.dtype == np.float32
    assert ds.y.dtype == np.int64 and set(np.unique(ds.y)) == set(range(10))
    assert ds.image_shape == (1, 8, 8)
    assert ds.feature_names[0] == "pixel_0_0" and ds.feature_names[-1] == "pixel_7_7"
    validate_dataset(ds)


def test_synthetic_classification_informative_columns_carry_the_signal():
    ds = make_synthetic("classification", 600, 20, 4, 3, seed=1)
    assert ds.X.shape == (600, 20) and ds.X.dtype == np.float32 and ds.y.dtype == np.int64
    assert len(ds.informative) == 4 and ds.informative != (0, 1, 2, 3)  # columns were permuted
    # a nearest-neighbour model does well on the informative columns and at chance on the rest
    informative = list(ds.informative)
    noise = np.setdiff1d(np.arange(20), informative)

    def accuracy(columns):
        knn = KNeighborsClassifier(15).fit(ds.X[:400, columns], ds.y[:400])
        return knn.score(ds.X[400:, columns], ds.y[400:])

    assert accuracy(informative) > 0.7
    assert accuracy(noise) < 0.5


def test_synthetic_regression_lasso_recovers_informative_columns():
    ds = make_synthetic("regression", 300, 15, 3, 2, seed=3)
    assert ds.y.dtype == np.float32 and len(ds.informative) == 3
    coef = Lasso(alpha=1.0).fit(ds.X, ds.y).coef_
    top = np.argsort(-np.abs(coef))[:3]
    assert set(top) == set(ds.informative)


def test_synthetic_is_deterministic_per_seed():
    a = make_synthetic("classification", 100, 10, 3, 2, seed=7)
    b = make_synthetic("classification", 100, 10, 3, 2, seed=7)
    assert np.array_equal(a.X, b.X) and a.informative == b.informative


def test_synthetic_too_many_classes_names_parameter():
    with pytest.raises(SparsetrainError, match="data.n_informative"):
        make_synthetic("classification", 100, 10, 1, 3, seed=0)


# ---------------------------------------------------------------------------------- fashion


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes((0, 0, 0x08, array.ndim)) + np.array(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion(folder: Path, n_train=30, n_test=10) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 3)


def test_fashion_parser_on_fake_idx(tmp_path):
    _fake_fashion(tmp_path)
    ds = load_fashion_mnist(tmp_path)
    assert ds.X.shape == (40, 784) and ds.X.dtype == np.float32
    assert 0.0 <= ds.X.min() and ds.X.max() <= 1.0
    assert ds.image_shape == (1, 28, 28) and ds.official_test_start == 30
    assert list(ds.y[:6]) == [0, 1, 2, 0, 1, 2]


def test_fashion_max_train_samples_is_balanced_and_keeps_test(tmp_path):
    _fake_fashion(tmp_path)
    ds = load_fashion_mnist(tmp_path, max_train_samples=12)
    assert ds.official_test_start == 12 and len(ds.y) == 22
    assert np.bincount(ds.y[:12]).tolist() == [4, 4, 4]


def test_fashion_bad_magic_number(tmp_path):
    _fake_fashion(tmp_path)
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(b"\x00\x00\x09\x01" + b"\x00" * 8)
    with pytest.raises(SparsetrainError, match="magic"):
        load_fashion_mnist(tmp_path)


def test_fashion_missing_files_names_path_and_fix(tmp_path):
    with pytest.raises(SparsetrainError, match="data.path") as info:
        load_fashion_mnist(tmp_path)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "apt-get install dataset-fashion-mnist" in message
    assert "\n" not in message


@pytest.mark.skipif(
    not Path(FASHION_MNIST_DIRS[0]).is_dir(),
    reason=f"real Fashion-MNIST not at {FASHION_MNIST_DIRS[0]} (apt-get install dataset-fashion-mnist)",
)
def test_fashion_real_files():
    ds = load_fashion_mnist(max_train_samples=1000)
    assert ds.X.shape == (11000, 784) and ds.official_test_start == 1000
    assert np.bincount(ds.y[:1000]).tolist() == [100] * 10
    assert np.bincount(ds.y[1000:]).tolist() == [1000] * 10
    assert ds.class_names[0] == "T-shirt/top"


# ---------------------------------------------------------------------------------- tables


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_table_round_trip(tmp_path, suffix):
    frame = _frame()
    path = tmp_path / f"t{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    ds = load_dataset(DataConfig(source="table", path=str(path), target="label"))
    assert ds.feature_names == ("a", "b") and ds.X.dtype == np.float32
    np.testing.assert_allclose(ds.X[:, 0], frame["a"].to_numpy(), rtol=1e-6)
    assert ds.class_names == ("cat", "dog") and ds.y.dtype == np.int64 and list(ds.y[:2]) == [0, 1]
    assert ds.target == "label"


def test_load_dataset_prefers_given_frame():
    ds = load_dataset(DataConfig(source="table", target="label"), table=_frame())
    assert ds.X.shape == (40, 2)


def test_table_without_path_or_frame():
    with pytest.raises(SparsetrainError, match="data.path"):
        load_dataset(DataConfig(source="table", target="label"))


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [("t.xlsx", "a,b\n1,2\n", "data.path"), ("empty.csv", "", "data.path"), ("header.csv", "a,b\n", "empty")],
)
def test_read_table_errors(tmp_path, name, content, needle):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SparsetrainError, match=needle):
        read_table(path)


def test_read_table_missing_file(tmp_path):
    with pytest.raises(SparsetrainError, match="data.path .*does not exist"):
        read_table(tmp_path / "nope.csv")


@dataclass(frozen=True)
class Settings:
    """Plain data settings: load_dataset needs no config package, only these attributes."""

    source: str = "table"
    path: str | None = None
    target: str | None = "label"
    task: str = "classification"
    seed: int = 0
    n_samples: int = 60
    n_features: int = 6
    n_informative: int = 2
    n_classes: int = 2
    max_train_samples: int | None = None
    separator: str | None = None


def _error(call, *args, **kwargs) -> str:
    with pytest.raises(SparsetrainError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_load_dataset_takes_plain_settings(tmp_path):
    path = tmp_path / "t.csv"
    _frame().to_csv(path, index=False)
    ds = load_dataset(Settings(path=str(path)))
    assert ds.feature_names == ("a", "b") and ds.class_names == ("cat", "dog")
    synthetic = load_dataset(Settings(source="synthetic"))
    assert synthetic.X.shape == (60, 6) and len(synthetic.informative) == 2


def test_sources_registry_covers_every_source_and_names_them_when_unknown():
    assert list(SOURCES) == ["digits", "fashion_mnist", "synthetic", "table", "batches"]
    assert load_dataset(Settings(source="digits")).image_shape == (1, 8, 8)
    message = _error(load_dataset, Settings(source="mnist"))
    assert message == "data.source 'mnist' is unknown; choose one of digits, fashion_mnist, synthetic, table, batches"


@pytest.mark.parametrize("source", ["digits", "fashion_mnist"])
def test_labelled_sources_refuse_regression(source):
    message = _error(load_dataset, Settings(source=source, task="regression"))
    assert f"data.source '{source}'" in message and "set data.task: classification" in message


def test_table_path_is_a_directory(tmp_path):
    message = _error(load_dataset, Settings(path=str(tmp_path)))
    assert message == f"data.path '{tmp_path}' is a directory; give a CSV or Parquet file"


def test_fashion_mnist_path_is_a_directory(tmp_path):
    _fake_fashion(tmp_path)
    assert load_dataset(Settings(source="fashion_mnist", path=str(tmp_path))).official_test_start == 30


@pytest.mark.parametrize("separator", [";", "\t", "|"])
def test_wrong_separator_says_which_to_set(tmp_path, separator):
    path = tmp_path / "t.csv"
    _frame().to_csv(path, index=False, sep=separator)
    header = separator.join(["a", "b", "label"])
    message = _error(load_dataset, Settings(path=str(path)))
    assert message == (
        f"data.target 'label' is not a column: the file looks {separator!r}-separated "
        f"(1 column {header!r}); set data.separator={separator!r}"
    )
    ds = load_dataset(Settings(path=str(path), separator=separator))
    assert ds.feature_names == ("a", "b")


def _write_column(tmp_path, column: str, values) -> Path:
    frame = _frame().assign(**{column: values})
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    return path


def test_feature_beyond_float32_names_column_and_fix(tmp_path):
    values = np.where(np.arange(40) == 3, 1e308, 1.0)
    message = _error(load_dataset, Settings(path=str(_write_column(tmp_path, "a", values))))
    assert message == (
        "feature column 'a' holds values beyond float32's range (±3.4e38), e.g. 1e+308; "
        "rescale the column (e.g. divide it by 1e+308) or drop it"
    )


def test_regression_target_beyond_float32_names_target(tmp_path):
    path = _write_column(tmp_path, "label", np.where(np.arange(40) == 5, -2e300, 1.0))
    message = _error(load_dataset, Settings(path=str(path), task="regression"))
    assert message == (
        "data.target 'label' holds values beyond float32's range (±3.4e38), e.g. -2e+300; "
        "rescale the column (e.g. divide it by 1e+300)"
    )


def test_real_infinity_is_still_reported_as_infinite(tmp_path):
    path = _write_column(tmp_path, "a", np.where(np.arange(40) == 3, np.inf, 1.0))
    message = _error(load_dataset, Settings(path=str(path)))
    assert message.startswith("feature columns 'a' contain NaN or infinite values")


def test_features_near_float32_max_standardize_to_finite_unit_variance(tmp_path):
    values = np.where(np.arange(40) % 10 == 0, 3.3e38, -3.3e38)  # skewed: x - mean overflows float32
    ds = load_dataset(Settings(path=str(_write_column(tmp_path, "a", values))))
    validate_dataset(ds)
    splits = split_dataset(ds, val_size=0.1, test_size=0.2, seed=0)
    scaler = Standardizer().fit(splits.X_train)
    for X in (splits.X_train, splits.X_val, splits.X_test):
        out = scaler.transform(X)
        assert out.dtype == np.float32 and np.isfinite(out).all()
    train = scaler.transform(splits.X_train)
    np.testing.assert_allclose(train.std(axis=0), 1, atol=1e-4)
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-4)


def test_regression_table():
    frame = _frame().assign(price=np.linspace(0, 1, 40)).drop(columns="label")
    ds = dataset_from_frame(frame, "price", "regression")
    assert ds.y.dtype == np.float32 and ds.class_names is None


@pytest.mark.parametrize(
    ("change", "target", "task", "needle"),
    [
        (lambda f: f.iloc[:0], "label", "classification", "empty"),
        (lambda f: f, "species", "classification", "data.target 'species'.*'a', 'b', 'label'"),
        (lambda f: f.assign(color="red"), "label", "classification", "'color'.*encode them numerically"),
        (lambda f: f.assign(a=np.where(f.index == 3, np.nan, f.a)), "label", "classification", "'a'.*NaN"),
        (
            lambda f: f.assign(b=np.where(f.index == 3, np.inf, f.b)),
            "label",
            "classification",
            "'b'.*infinite",
        ),
        (
            lambda f: f.assign(label=f.label.where(f.index != 2)),
            "label",
            "classification",
            "data.target 'label'.*missing",
        ),
        (lambda f: f, "label", "regression", "data.target 'label' is not numeric"),
        (lambda f: f.assign(label=f.a), "label", "classification", "data.target 'label'.*fractional"),
        (lambda f: f, "label", "ranking", "data.task"),
    ],
)
def test_dataset_from_frame_errors(change, target, task, needle):
    with pytest.raises(SparsetrainError, match=needle) as info:
        dataset_from_frame(change(_frame()), target, task)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------- validation


def _ds(X, y, task="classification", **kw):
    return Dataset(
        X=np.asarray(X, dtype=np.float32),
        y=np.asarray(y),
        feature_names=tuple(f"f{i}" for i in range(np.shape(X)[1])),
        task=task,
        **kw,
    )


def test_validate_single_class_names_target():
    frame = _frame().assign(label="cat")
    with pytest.raises(SparsetrainError, match="data.target 'label' has a single class.*at least two"):
        validate_dataset(dataset_from_frame(frame, "label", "classification"))


def test_validate_nan_and_inf_name_columns():
    X = np.zeros((4, 3))
    X[1, 2] = np.nan
    with pytest.raises(SparsetrainError, match="'f2'"):
        validate_dataset(_ds(X, [0, 1, 0, 1]))
    X[1, 2], X[0, 0] = 0, -np.inf
    with pytest.raises(SparsetrainError, match="'f0'"):
        validate_dataset(_ds(X, [0, 1, 0, 1]))


def test_validate_other_errors():
    with pytest.raises(SparsetrainError, match="empty"):
        validate_dataset(_ds(np.zeros((0, 3)), []))
    with pytest.raises(SparsetrainError, match="single row.*drop those classes"):
        validate_dataset(_ds(np.zeros((5, 2)), [0, 0, 1, 1, 2], class_names=("a", "b", "c")))
    with pytest.raises(SparsetrainError, match="infinite"):
        validate_dataset(_ds(np.zeros((3, 2)), [0.0, np.nan, 1.0], task="regression"))


# ---------------------------------------------------------------------------------- splits


def test_split_sizes_and_stratification():
    ds = load_digits_dataset()
    s = split_dataset(ds, val_size=0.1, test_size=0.2, seed=0)
    n = len(ds.y)
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == n
    assert abs(len(s.y_test) - 0.2 * n) <= 1 and abs(len(s.y_val) - 0.1 * n) <= 1
    full = np.bincount(ds.y) / n
    for y in (s.y_train, s.y_val, s.y_test):
        assert np.abs(np.bincount(y, minlength=10) / len(y) - full).max() < 0.02
    assert s.X_train.dtype == np.float32
    again = split_dataset(ds, val_size=0.1, test_size=0.2, seed=0)
    assert np.array_equal(s.y_test, again.y_test)


def test_split_without_validation_and_regression():
    ds = make_synthetic("regression", 100, 5, 2, 2, seed=0)
    s = split_dataset(ds, val_size=0.0, test_size=0.25, seed=0)
    assert s.X_val.shape == (0, 5) and s.y_val.shape == (0,)
    assert len(s.y_train) == 75 and len(s.y_test) == 25


def test_split_impossible_stratification_names_parameters():
    ds = _ds(np.zeros((20, 2)), [0] * 10 + [1] * 8 + [2] * 2)
    with pytest.raises(SparsetrainError, match="data.test_size.*data.val_size"):
        split_dataset(ds, val_size=0.1, test_size=0.1, seed=0)


def test_standardizer_fitted_on_train_only():
    rng = np.random.default_rng(0)
    train = rng.normal(5.0, 3.0, size=(200, 4)).astype(np.float32)
    train[:, 3] = 7.0  # constant feature
    scaler = Standardizer().fit(train)
    out = scaler.transform(train)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(out[:, :3].std(axis=0), 1, atol=1e-4)
    assert scaler.scale_[3] == 1 and np.all(out[:, 3] == 0)
    test = rng.normal(0.0, 1.0, size=(50, 4)).astype(np.float32)
    assert scaler.transform(test)[:, 0].mean() < -1  # uses train statistics, not the test's
    clone = pickle.loads(pickle.dumps(scaler))
    np.testing.assert_array_equal(clone.transform(test), scaler.transform(test))
    with pytest.raises(SparsetrainError, match="4 features"):
        scaler.transform(test[:, :3])


# --------------------------------------------------------------------------------------------
# batches


def _batch(rows: range) -> pd.DataFrame:
    return pd.DataFrame({"a": [float(i) for i in rows], "b": [float(i % 3) for i in rows],
                         "label": [i % 2 for i in rows]})


def test_batches_concatenate_in_name_order_and_the_window_keeps_the_last(tmp_path):
    for name, rows in (("b_002.csv", range(10, 20)), ("b_001.csv", range(0, 10)), ("b_003.parquet", range(20, 30))):
        frame = _batch(rows)
        frame.to_parquet(tmp_path / name) if name.endswith("parquet") else frame.to_csv(tmp_path / name, index=False)
    (tmp_path / "notes.txt").write_text("not a batch")
    settings = Settings(source="batches", path=str(tmp_path), target="label")
    ds, record = load_source_data(settings)
    assert ds.X[:, 0].tolist() == [float(i) for i in range(30)]
    assert record["batches"] == ["b_001.csv", "b_002.csv", "b_003.parquet"] and record["rows"] == 30
    last, window = load_source_data(settings, window=2)
    assert window["batches"] == ["b_002.csv", "b_003.parquet"] and last.X[0, 0] == 10.0
    assert window["fingerprint"] != record["fingerprint"]
    assert load_source_data(settings)[1]["fingerprint"] == record["fingerprint"]


def test_batches_from_the_catalog_loaders(tmp_path):
    loaders = {"2.csv": lambda: _batch(range(10, 20)), "1.csv": lambda: _batch(range(10))}
    ds, record = load_source_data(Settings(source="batches", target="label"), raw_batches=loaders, window=1)
    assert record["batches"] == ["2.csv"] and ds.X.shape == (10, 2)


def test_a_batch_with_other_columns_is_named():
    loaders = {"1.csv": lambda: _batch(range(10)), "2.csv": lambda: _batch(range(10)).drop(columns=["b"])}
    message = _error(load_source_data, Settings(source="batches", target="label"), None, loaders)
    assert message == (
        "batch '2.csv' does not have the columns of batch '1.csv' (it lacks 'b'); fix or remove that batch file"
    )


def test_no_batches_says_where_to_put_them(tmp_path):
    message = _error(load_source_data, Settings(source="batches", target="label"), None, {})
    assert "data/01_raw/batches/" in message and "data.path" in message
    assert "is not a folder" in _error(load_source_data, Settings(source="batches", target="label",
                                                                  path=str(tmp_path / "none")))
