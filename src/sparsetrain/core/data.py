"""Datasets as plain arrays: loading, validation, splitting and standardization.

Every source (sklearn digits, Fashion-MNIST IDX files, synthetic data with known informative
features, a user's CSV / Parquet table, a folder of such tables that grows batch by batch) ends
up as one :class:`Dataset`, so that the rest of the library never cares where rows came from.
Checks on user data raise :class:`SparsetrainError` with one line naming the parameter or column
and the fix, before any training starts.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits, make_classification, make_regression
from sklearn.model_selection import train_test_split

from sparsetrain.errors import SparsetrainError

TASKS = ("classification", "regression")
FLOAT32_MAX = float(np.finfo(np.float32).max)


class DataSettings(Protocol):
    """The ``data`` settings :func:`load_dataset` reads.

    A protocol, so that core needs no config package: the pydantic ``DataConfig`` satisfies it,
    and so does any object (a dataclass, a namespace) with these attributes.
    """

    source: str
    path: str | None
    target: str | None
    task: str
    seed: int
    n_samples: int
    n_features: int
    n_informative: int
    n_classes: int
    max_train_samples: int | None
    separator: str | None


@dataclass(frozen=True)
class Dataset:
    """Features ``X`` (float32, n x d) and targets ``y`` (int64 class ids, or float32 values)."""

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    task: str
    image_shape: tuple[int, int, int] | None = None  # (C, H, W) when rows are flattened images
    informative: tuple[int, ...] | None = None  # synthetic: columns that truly carry the signal
    class_names: tuple[str, ...] | None = None  # original labels, in class-id order
    official_test_start: int | None = None  # Fashion-MNIST: first row of the official t10k split
    target: str | None = None  # table: the label column, so messages can name it


@dataclass(frozen=True)
class DatasetInfo:
    """What the later steps of a run need to know about the data, without the data itself."""

    task: str
    n_rows: int
    n_features: int
    feature_names: tuple[str, ...]
    image_shape: tuple[int, int, int] | None = None
    class_names: tuple[str, ...] | None = None
    n_classes: int | None = None  # classification only
    informative: tuple[int, ...] | None = None
    target: str | None = None

    @classmethod
    def of(cls, ds: Dataset) -> DatasetInfo:
        classification = ds.task == "classification"
        return cls(
            task=ds.task,
            n_rows=int(ds.X.shape[0]),
            n_features=int(ds.X.shape[1]),
            feature_names=tuple(ds.feature_names),
            image_shape=tuple(ds.image_shape) if ds.image_shape else None,
            class_names=tuple(ds.class_names) if ds.class_names else None,
            n_classes=int(len(np.unique(ds.y))) if classification else None,
            informative=tuple(int(i) for i in ds.informative) if ds.informative is not None else None,
            target=ds.target,
        )

    @property
    def n_outputs(self) -> int:
        return self.n_classes if self.task == "classification" else 1

    def image_shape_at(self, n_inputs: int) -> tuple[int, int, int] | None:
        """The image shape of model inputs ``n_inputs`` wide: only uncompressed images keep it."""
        return self.image_shape if self.image_shape is not None and n_inputs == self.n_features else None


# --------------------------------------------------------------------------------------------
# sources


def _pixel_names(height: int, width: int) -> tuple[str, ...]:
    return tuple(f"pixel_{r}_{c}" for r in range(height) for c in range(width))


def load_digits_dataset() -> Dataset:
    """The 1797 8x8 sklearn digits: small enough for tests, image-shaped enough for the CNN."""
    bunch = load_digits()
    return Dataset(
        X=bunch.data.astype(np.float32),
        y=bunch.target.astype(np.int64),
        feature_names=_pixel_names(8, 8),
        task="classification",
        image_shape=(1, 8, 8),
        class_names=tuple(str(c) for c in bunch.target_names),
    )


FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist", "data/01_raw/fashion_mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse one gzipped IDX file of unsigned bytes (magic 0x0000 08 <ndim>, big-endian dims)."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 + 4 * ndim or raw[:4] != bytes((0, 0, 0x08, ndim)):
        raise SparsetrainError(
            f"data.path: {path} is not an IDX file of {ndim}-d unsigned bytes (bad magic number); "
            "replace it with the original Fashion-MNIST file"
        )
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise SparsetrainError(
            f"data.path: {path} holds {body.size} bytes of data but its header says {shape}; "
            "the file is truncated, copy it again"
        )
    return body.reshape(shape)


def _find_fashion_dir(path: str | Path | None) -> Path:
    candidates = [Path(path)] if path is not None else [Path(p) for p in FASHION_MNIST_DIRS]
    for folder in candidates:
        if all((folder / name).is_file() for name in FASHION_MNIST_FILES):
            return folder
    looked = " or ".join(str(c) for c in candidates)
    raise SparsetrainError(
        f"data.path: no Fashion-MNIST files ({', '.join(FASHION_MNIST_FILES)}) in {looked}; "
        "apt-get install dataset-fashion-mnist or copy the IDX files to data/01_raw/fashion_mnist/"
    )


def _balanced_head(labels: np.ndarray, n: int) -> np.ndarray:
    """Sorted indices of the first ``n`` rows taken round-robin over classes.

    Keeps the earliest rows of each class so the subset is deterministic and its classes are
    balanced to within one row (as far as each class has rows).
    """
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], labels[order], side="left")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order)) - starts
    keep = np.lexsort((np.arange(len(labels)), rank))[:n]
    return np.sort(keep)


def load_fashion_mnist(path: str | Path | None = None, max_train_samples: int | None = None) -> Dataset:
    """Fashion-MNIST, train rows then the 10000 t10k rows, pixels scaled to [0, 1].

    ``path`` None searches :data:`FASHION_MNIST_DIRS` in order. ``max_train_samples`` keeps a
    class-balanced subset of the earliest training images (see :func:`_balanced_head`); the t10k
    rows are always kept whole, and ``official_test_start`` marks where they begin.
    """
    folder = _find_fashion_dir(path)
    train_x, train_y, test_x, test_y = (
        _read_idx(folder / name, 3 if "images" in name else 1) for name in FASHION_MNIST_FILES
    )
    for images, labels in ((train_x, train_y), (test_x, test_y)):
        if len(images) != len(labels):
            raise SparsetrainError(
                f"data.path: {folder} has {len(images)} images but {len(labels)} labels in one split; "
                "copy the original IDX files again"
            )
    if max_train_samples is not None and max_train_samples < len(train_y):
        keep = _balanced_head(train_y, max_train_samples)
        train_x, train_y = train_x[keep], train_y[keep]
    height, width = train_x.shape[1:]
    images = np.concatenate([train_x, test_x]).reshape(-1, height * width)
    return Dataset(
        X=images.astype(np.float32) / np.float32(255.0),
        y=np.concatenate([train_y, test_y]).astype(np.int64),
        feature_names=_pixel_names(height, width),
        task="classification",
        image_shape=(1, height, width),
        class_names=FASHION_MNIST_CLASSES,
        official_test_start=len(train_y),
    )


def make_synthetic(
    task: str, n_samples: int, n_features: int, n_informative: int, n_classes: int, seed: int
) -> Dataset:
    """Data whose informative columns are known, to check that sparse models find them.

    Classification has no redundant or repeated columns (they would carry signal too), so every
    non-informative column is pure noise; rows and columns are shuffled with ``seed`` afterwards
    (``make_classification`` must not shuffle, or the informative columns would be lost).
    """
    _check_task(task)
    rng = np.random.default_rng(seed)
    if task == "classification":
        if n_classes > 2**n_informative:
            raise SparsetrainError(
                f"data.n_classes={n_classes} needs more than data.n_informative={n_informative} informative "
                f"features; raise data.n_informative to at least {int(np.ceil(np.log2(n_classes)))}"
            )
        X, y = make_classification(
            n_samples=n_samples,
            n_features=n_features,
            n_informative=n_informative,
            n_redundant=0,
            n_repeated=0,
            n_classes=n_classes,
            n_clusters_per_class=2 if 2 * n_classes <= 2**n_informative else 1,
            shuffle=False,
            random_state=seed,
        )
        rows, perm = rng.permutation(n_samples), rng.permutation(n_features)
        X, y = X[rows][:, perm], y[rows]  # new column j holds old column perm[j]
        informative = np.flatnonzero(perm < n_informative)
        y = y.astype(np.int64)
        class_names = tuple(str(c) for c in range(n_classes))
    else:
        X, y, coef = make_regression(
            n_samples=n_samples,
            n_features=n_features,
            n_informative=n_informative,
            noise=1.0,
            coef=True,
            random_state=seed,
        )
        informative = np.flatnonzero(coef)
        y = y.astype(np.float32)
        class_names = None
    return Dataset(
        X=X.astype(np.float32),
        y=y,
        feature_names=tuple(f"x{i}" for i in range(n_features)),
        task=task,
        informative=tuple(int(i) for i in informative),
        class_names=class_names,
    )


def make_correlated_groups(
    n_samples: int, n_groups: int, group_size: int, n_noise: int, correlation: float, seed: int
) -> Dataset:
    """Regression data whose signal lives in groups of strongly correlated columns: group ``g``
    is ``group_size`` noisy copies of one latent factor (pairwise correlation ``correlation``),
    ``y`` is the sum of the factors plus noise, and ``n_noise`` independent columns carry nothing.
    Columns ``[g * group_size, (g + 1) * group_size)`` form group ``g``; the noise columns come
    last. What ElasticNet's grouping effect (Zou & Hastie 2005) is about: L1 tends to keep one
    column of a group, ElasticNet the group."""
    if not 0.0 < correlation < 1.0:
        raise SparsetrainError(f"correlation must be in (0, 1), got {correlation}")
    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((n_samples, n_groups))
    spread = np.sqrt((1.0 - correlation) / correlation)
    width = n_groups * group_size
    grouped = np.repeat(factors, group_size, axis=1) + spread * rng.standard_normal((n_samples, width))
    noise = rng.standard_normal((n_samples, n_noise))
    X = np.hstack([grouped, noise]).astype(np.float32)
    y = (factors.sum(axis=1) + 0.5 * rng.standard_normal(n_samples)).astype(np.float32)
    names = [f"g{g}_{i}" for g in range(n_groups) for i in range(group_size)]
    names += [f"noise{j}" for j in range(n_noise)]
    return Dataset(
        X=X, y=y, feature_names=tuple(names), task="regression",
        informative=tuple(range(width)),
    )


TableReader = Callable[[Path, str | None], pd.DataFrame]


def _csv_reader(default_separator: str) -> TableReader:
    return lambda path, separator: pd.read_csv(path, sep=separator or default_separator)


def _parquet_reader(path: Path, separator: str | None) -> pd.DataFrame:
    return pd.read_parquet(path)  # columns are typed and named in the file: no separator


TABLE_READERS: dict[str, TableReader] = {
    ".csv": _csv_reader(","),
    ".tsv": _csv_reader("\t"),
    ".parquet": _parquet_reader,
    ".pq": _parquet_reader,
}
SEPARATORS = (",", ";", "\t", "|")  # what a one-column header may hide (see _not_a_column)


def read_table(path: str | Path, separator: str | None = None) -> pd.DataFrame:
    """Read a CSV / TSV / Parquet file, chosen by suffix; ``separator`` replaces a CSV's ',' (a TSV's tab)."""
    path = Path(path)
    if path.is_dir():
        raise SparsetrainError(f"data.path '{path}' is a directory; give a CSV or Parquet file")
    reader = TABLE_READERS.get(path.suffix.lower())
    if reader is None:
        raise SparsetrainError(
            f"data.path '{path}' has suffix '{path.suffix}'; use a {', '.join(TABLE_READERS)} file"
        )
    if not path.is_file():
        raise SparsetrainError(f"data.path '{path}' does not exist; point data.path at the table file")
    try:
        frame = reader(path, separator)
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    except (ValueError, OSError) as error:
        reason = " ".join(str(error).split())
        raise SparsetrainError(f"data.path '{path}' could not be read ({reason}); check the file") from None
    if frame.empty:
        raise SparsetrainError(f"data.path '{path}' is empty (no rows); point data.path at a table with data")
    return frame


# --------------------------------------------------------------------------------------------
# batches: a folder of table files that grows, one file per delivery


BATCH_SUFFIXES = tuple(TABLE_READERS)


def batch_files(folder: str | Path) -> list[Path]:
    """The table files of ``folder`` in name order (name them so that it is arrival order:
    ``batch_0001.csv``, or a date)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SparsetrainError(f"data.path '{folder}' is not a folder; point it at the folder of batch files")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in BATCH_SUFFIXES)


def last_batches(names: Sequence[str], window: int | None) -> list[str]:
    """The last ``window`` batch names in name order; all of them when ``window`` is None."""
    ordered = sorted(names)
    return ordered if window is None else ordered[-window:]


def concat_batches(batches: Sequence[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """One table of the batches, in the order given; every batch must have the first one's columns."""
    if not batches:
        raise SparsetrainError(
            "data.source 'batches' found no batch files (*.csv, *.parquet) in data/01_raw/batches/ "
            "(or data.path); add at least one"
        )
    first_name, first = batches[0]
    for name, frame in batches[1:]:
        if list(frame.columns) != list(first.columns):
            missing = [c for c in first.columns if c not in frame.columns]
            extra = [c for c in frame.columns if c not in first.columns]
            detail = f"lacks {_list(missing)}" if missing else f"adds {_list(extra)}"
            if not missing and not extra:
                detail = "orders them differently"
            raise SparsetrainError(
                f"batch '{name}' does not have the columns of batch '{first_name}' (it {detail}); "
                "fix or remove that batch file"
            )
    return pd.concat([frame for _, frame in batches], ignore_index=True)


def fingerprint(ds: Dataset) -> str:
    """sha256 of the features, targets and column names: equal data, equal fingerprint."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(ds.feature_names).encode())
    digest.update(np.ascontiguousarray(ds.X, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(ds.y).tobytes())
    return digest.hexdigest()


def _list(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(str(n)) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise SparsetrainError(f"data.task '{task}' is unknown; choose classification or regression")


def dataset_from_frame(frame: pd.DataFrame, target: str, task: str) -> Dataset:
    """Turn a table into a Dataset: every column but ``target`` is a numeric feature."""
    _check_task(task)
    if frame.empty:
        raise SparsetrainError("the data table is empty (no rows or columns); check data.path")
    if target not in frame.columns:
        raise SparsetrainError(f"data.target '{target}' is not a column{_not_a_column(list(frame.columns))}")
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise SparsetrainError(f"the table has no feature columns besides data.target '{target}'; add some")
    non_numeric = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric:
        raise SparsetrainError(
            f"feature columns {_list(non_numeric)} are not numeric; encode them numerically or drop them"
        )
    names = tuple(str(c) for c in features.columns)
    X = features.to_numpy(dtype=np.float64)
    _check_finite(X, names)
    _check_features_fit_float32(X, names)

    labels = frame[target]
    if labels.isna().any():
        raise SparsetrainError(
            f"data.target '{target}' has {int(labels.isna().sum())} missing values; drop or fill those rows"
        )
    if task == "classification":
        if pd.api.types.is_float_dtype(labels) and not np.all(np.mod(labels.to_numpy(), 1) == 0):
            raise SparsetrainError(
                f"data.target '{target}' holds fractional numbers; set data.task: regression "
                "or encode the classes as labels"
            )
        codes, uniques = pd.factorize(labels, sort=True)
        y = codes.astype(np.int64)
        class_names = tuple(str(u) for u in uniques)
    else:
        if not pd.api.types.is_numeric_dtype(labels) or pd.api.types.is_bool_dtype(labels):
            raise SparsetrainError(
                f"data.target '{target}' is not numeric; a regression needs numbers "
                "(or set data.task: classification)"
            )
        y = labels.to_numpy(dtype=np.float64)
        _check_target_fits_float32(y, target)
        y = y.astype(np.float32)
        class_names = None
    return Dataset(
        X=X.astype(np.float32),
        y=y,
        feature_names=names,
        task=task,
        class_names=class_names,
        target=target,
    )


def _not_a_column(columns: list) -> str:
    """The rest of the missing-target message: the columns there are, or, when the file was read
    with the wrong separator (one column whose header still holds the real one), the fix."""
    header = str(columns[0]) if len(columns) == 1 else ""
    separator = max(SEPARATORS, key=header.count)
    if separator in header:
        return (
            f": the file looks {separator!r}-separated (1 column {header!r}); "
            f"set data.separator={separator!r}"
        )
    return f" of the table; available columns: {_list(columns, 10)}"


def _float32_overflow(values: np.ndarray) -> tuple[list[int], float]:
    """Columns of 2-d float64 ``values`` with finite entries that float32 would turn into ±inf,
    and the largest such entry; checked before the cast so they are not reported as infinite."""
    magnitude = np.abs(values)
    magnitude[~np.isfinite(magnitude)] = 0.0  # real NaN / inf are reported as such elsewhere
    bad = np.flatnonzero(magnitude.max(axis=0) > FLOAT32_MAX)
    if not bad.size:
        return [], 0.0
    worst = np.unravel_index(np.argmax(magnitude), magnitude.shape)
    return bad.tolist(), float(values[worst])


def _overflow_text(value: float, plural: bool) -> str:
    """The shared middle of the overflow messages; the divisor brings ``value`` to order one."""
    divisor = 10.0 ** np.floor(np.log10(abs(value)))
    columns, them = ("the columns", "them") if plural else ("the column", "it")
    return (
        f"values beyond float32's range (±3.4e38), e.g. {value:g}; "
        f"rescale {columns} (e.g. divide {them} by {divisor:g})"
    )


def _check_features_fit_float32(X: np.ndarray, feature_names: tuple[str, ...]) -> None:
    bad, worst = _float32_overflow(X)
    if bad:
        plural = len(bad) > 1
        raise SparsetrainError(
            f"feature column{'s' if plural else ''} {_list([feature_names[i] for i in bad])} "
            f"hold{'' if plural else 's'} {_overflow_text(worst, plural)} "
            f"or drop {'them' if plural else 'it'}"
        )


def _check_target_fits_float32(y: np.ndarray, target: str) -> None:
    bad, worst = _float32_overflow(y.reshape(-1, 1))
    if bad:
        raise SparsetrainError(f"data.target '{target}' holds {_overflow_text(worst, plural=False)}")


def _require_classification(cfg: DataSettings) -> None:
    if cfg.task != "classification":
        raise SparsetrainError(
            f"data.task '{cfg.task}' does not fit data.source '{cfg.source}', which has class labels; "
            "set data.task: classification"
        )


def _digits_source(cfg: DataSettings, table: pd.DataFrame | None) -> Dataset:
    _require_classification(cfg)
    return load_digits_dataset()


def _fashion_mnist_source(cfg: DataSettings, table: pd.DataFrame | None) -> Dataset:
    _require_classification(cfg)
    return load_fashion_mnist(cfg.path, cfg.max_train_samples)


def _synthetic_source(cfg: DataSettings, table: pd.DataFrame | None) -> Dataset:
    return make_synthetic(cfg.task, cfg.n_samples, cfg.n_features, cfg.n_informative, cfg.n_classes, cfg.seed)


def _table_source(cfg: DataSettings, table: pd.DataFrame | None) -> Dataset:
    """The given frame (from the Kedro catalog), else the file at ``data.path``."""
    if cfg.target is None:
        raise SparsetrainError("data.target must name the label column when data.source is 'table'")
    if table is None:
        if cfg.path is None:
            raise SparsetrainError(
                "data.path is required when data.source is 'table'; set it to a CSV or Parquet file"
            )
        table = read_table(cfg.path, cfg.separator)
    return dataset_from_frame(table, cfg.target, cfg.task)


def _batches_source(cfg: DataSettings, table: pd.DataFrame | None) -> Dataset:
    """The batch files concatenated (by :func:`concat_batches`, from the catalog's folder or
    ``data.path``), or, without them, every file of the ``data.path`` folder."""
    if cfg.target is None:
        raise SparsetrainError("data.target must name the label column when data.source is 'batches'")
    if table is None:
        if cfg.path is None:
            raise SparsetrainError(
                "data.source 'batches' found no batch files (*.csv, *.parquet) in data/01_raw/batches/; "
                "add at least one, or set data.path to the folder that holds them"
            )
        table = concat_batches([(p.name, read_table(p, cfg.separator)) for p in batch_files(cfg.path)])
    return dataset_from_frame(table, cfg.target, cfg.task)


SOURCES: dict[str, Callable[[DataSettings, pd.DataFrame | None], Dataset]] = {
    "digits": _digits_source,
    "fashion_mnist": _fashion_mnist_source,
    "synthetic": _synthetic_source,
    "table": _table_source,
    "batches": _batches_source,
}


def load_dataset(cfg: DataSettings, table: pd.DataFrame | None = None) -> Dataset:
    """Load ``cfg.source`` through :data:`SOURCES`; a ``table`` frame wins over ``cfg.path``."""
    source = SOURCES.get(cfg.source)
    if source is None:
        raise SparsetrainError(f"data.source '{cfg.source}' is unknown; choose one of {', '.join(SOURCES)}")
    return source(cfg, table)


def load_source_data(
    cfg: DataSettings,
    raw_table: pd.DataFrame | None = None,
    raw_batches: Mapping[str, Callable[[], pd.DataFrame]] | None = None,
    window: int | None = None,
) -> tuple[Dataset, dict[str, Any]]:
    """The validated dataset of ``cfg.source`` and the record of what it holds (source, the
    batches used, row count, fingerprint). ``table`` reads ``raw_table`` (the Kedro catalog's)
    unless ``cfg.path`` is set; ``batches`` the ``raw_batches`` loaders by name (the catalog's
    batch folder) or the ``cfg.path`` folder, of which the last ``window`` files are used (all
    when None)."""
    table, used = None, None
    if cfg.source == "table" and cfg.path is None:
        if cfg.separator is not None:
            raise SparsetrainError(
                "data.separator applies to data.path; set data.path to the file, or give raw_table "
                "in conf/base/catalog.yml its own `separator:`"
            )
        table = raw_table
    elif cfg.source == "batches":
        if cfg.path is not None:
            raw_batches = {p.name: partial(read_table, p, cfg.separator) for p in batch_files(cfg.path)}
        raw_batches = raw_batches or {}
        used = last_batches(list(raw_batches), window)
        table = concat_batches([(name, raw_batches[name]()) for name in used]) if used else None
    dataset = load_dataset(cfg, table)
    validate_dataset(dataset)
    record: dict[str, Any] = {
        "source": cfg.source, "rows": int(dataset.X.shape[0]), "fingerprint": fingerprint(dataset)
    }
    if used is not None:
        record.update(batches=used, window=window)
    return dataset, record


# --------------------------------------------------------------------------------------------
# validation and splitting


def _check_finite(X: np.ndarray, feature_names: tuple[str, ...]) -> None:
    bad = np.flatnonzero(~np.isfinite(X).all(axis=0))
    if bad.size:
        names = [feature_names[i] if i < len(feature_names) else str(i) for i in bad]
        raise SparsetrainError(
            f"feature columns {_list(names)} contain NaN or infinite values; "
            "fill or drop those rows or columns"
        )


def _target_label(ds: Dataset) -> str:
    return f"data.target '{ds.target}'" if ds.target else "the target"


def validate_dataset(ds: Dataset) -> None:
    """Reject data that would fail, or silently mislead, later in the run."""
    n_rows, n_features = ds.X.shape
    if n_rows == 0 or n_features == 0:
        raise SparsetrainError(
            f"the dataset is empty ({n_rows} rows, {n_features} features); check data.source and data.path"
        )
    if len(ds.y) != n_rows:
        raise SparsetrainError(f"the dataset has {n_rows} rows but {len(ds.y)} targets; check data.path")
    _check_finite(ds.X, ds.feature_names)
    if ds.task == "regression":
        if not np.isfinite(ds.y).all():
            raise SparsetrainError(f"{_target_label(ds)} contains NaN or infinite values; drop those rows")
        return
    classes, counts = np.unique(ds.y, return_counts=True)
    if len(classes) < 2:
        raise SparsetrainError(
            f"{_target_label(ds)} has a single class ({_class_name(ds, classes[0])}); "
            "a classifier needs at least two"
        )
    rare = [_class_name(ds, c) for c, n in zip(classes, counts, strict=True) if n < 2]
    if rare:
        raise SparsetrainError(
            f"{_target_label(ds)} classes {_list(rare)} have a single row, too few for a stratified split; "
            "drop those classes or add rows"
        )


def _class_name(ds: Dataset, class_id: int) -> str:
    return repr(ds.class_names[class_id]) if ds.class_names else repr(int(class_id))


@dataclass(frozen=True)
class Splits:
    """Train / validation / test arrays; X float32. Validation may have zero rows."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def split_dataset(ds: Dataset, val_size: float, test_size: float, seed: int) -> Splits:
    """Split off ``test_size`` then ``val_size`` (both fractions of all rows), stratified by class."""
    if not 0 < test_size < 1 or not 0 <= val_size < 1 or val_size + test_size >= 1:
        raise SparsetrainError(
            f"data.test_size={test_size:g} and data.val_size={val_size:g} must be fractions with a sum < 1"
        )
    stratified = ds.task == "classification"
    X = ds.X.astype(np.float32, copy=False)
    try:
        X_rest, X_test, y_rest, y_test = train_test_split(
            X, ds.y, test_size=test_size, random_state=seed, stratify=ds.y if stratified else None
        )
        if val_size > 0:
            X_train, X_val, y_train, y_val = train_test_split(
                X_rest,
                y_rest,
                test_size=val_size / (1 - test_size),
                random_state=seed,
                stratify=y_rest if stratified else None,
            )
        else:
            X_train, y_train = X_rest, y_rest
            X_val, y_val = X[:0], ds.y[:0]
    except ValueError as error:
        raise SparsetrainError(
            f"cannot split {len(X)} rows with data.test_size={test_size:g}, data.val_size={val_size:g} "
            f"({error}); lower data.test_size / data.val_size, or drop the rarest classes"
        ) from None
    return Splits(X_train, y_train, X_val, y_val, X_test, y_test)


class Standardizer:
    """Per-feature ``(x - mean) / std``, fitted on the training split only.

    Plain numpy (the served model stores mean and scale as tensors); constant features get scale 1
    so they map to 0 instead of NaN.
    """

    mean_: np.ndarray
    scale_: np.ndarray

    def fit(self, X: np.ndarray) -> Standardizer:
        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(axis=0).astype(np.float32)
        scale = X.std(axis=0)
        scale[scale == 0] = 1.0
        self.scale_ = scale.astype(np.float32)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Scale in float64 and cast at the end: ``x - mean`` of two float32 values near ±3.4e38
        overflows float32 although the result, divided by the scale, fits."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.mean_.shape[0]:
            raise SparsetrainError(
                f"input has shape {X.shape}, expected rows of {self.mean_.shape[0]} features "
                "(the columns the model was trained on)"
            )
        return ((X - self.mean_) / self.scale_).astype(np.float32)
