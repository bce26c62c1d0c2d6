import pickle

import numpy as np
import pytest

from sparsetrain.core.compression import METHODS, fit_reducer, make_reducer, transform
from sparsetrain.core.data import load_digits_dataset
from sparsetrain.errors import SparsetrainError


@pytest.fixture(scope="module")
def digits():
    X = load_digits_dataset().X
    return X[:1200], X[1200:]


@pytest.mark.parametrize("method", METHODS[1:])
def test_each_method_keeps_n_components(digits, method):
    train, test = digits
    reducer, summary = fit_reducer(method, 10, train, seed=0)
    out = transform(reducer, test)
    assert out.shape == (len(test), 10) and out.dtype == np.float32
    assert summary["method"] == method and summary["n_components"] == 10 and summary["n_features_in"] == 64
    if method in ("pca", "svd"):
        assert len(summary["explained_variance_ratio_per_component"]) == 10
        assert 0 < summary["explained_variance_ratio"] <= 1
    again = transform(pickle.loads(pickle.dumps(reducer)), test)
    np.testing.assert_array_equal(out, again)


@pytest.mark.parametrize("method", [None, "none"])
def test_none_is_identity(digits, method):
    train, test = digits
    reducer, summary = fit_reducer(method, None, train, seed=0)
    np.testing.assert_array_equal(transform(reducer, test), test)
    assert summary == {"method": "none", "n_components": 64, "n_features_in": 64}


def test_pca_fraction_keeps_that_much_variance(digits):
    train, _ = digits
    _, summary = fit_reducer("pca", 0.9, train, seed=0)
    assert summary["explained_variance_ratio"] >= 0.9
    assert 1 < summary["n_components"] < 64


def test_reducer_is_fitted_on_train_only(digits):
    train, test = digits
    reducer, _ = fit_reducer("pca", 5, train, seed=0)
    np.testing.assert_allclose(reducer.mean_, train.mean(axis=0), atol=1e-5)
    assert not np.allclose(reducer.mean_, test.mean(axis=0), atol=1e-2)
    assert reducer.n_samples_ == len(train)


def test_make_reducer_is_unfitted():
    reducer = make_reducer("pca", 3, n_features=10, seed=0)
    assert not hasattr(reducer, "components_")


@pytest.mark.parametrize(
    ("method", "n_components", "needle"),
    [
        ("umap", 5, "compression.method 'umap'.*pca, svd"),
        ("pca", 65, "compression.n_components=65.*64 features.*at most 64"),
        ("random_projection", 100, "compression.n_components=100.*at most 64"),
        ("svd", 64, "compression.n_components=64.*at most 63"),
        ("svd", 0.5, "compression.n_components=0.5.*only method 'pca'"),
        ("pca", None, "compression.n_components is required"),
    ],
)
def test_bad_settings_name_the_parameter(method, n_components, needle):
    with pytest.raises(SparsetrainError, match=needle):
        make_reducer(method, n_components, n_features=64)


def test_pca_more_components_than_training_rows():
    X = np.random.default_rng(0).normal(size=(8, 20)).astype(np.float32)
    with pytest.raises(SparsetrainError, match="compression.n_components=10.*8 training rows"):
        fit_reducer("pca", 10, X, seed=0)
