"""The served model on a real MLflow SQLite store, from real (tiny) trained models: no pickle, the
sparse safetensors export inside, pyfunc answers equal to the in-process predictor, the inference
rule, bad rows refused with one line, and `mlflow models serve` over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.random_projection import GaussianRandomProjection, SparseRandomProjection

from sparsetrain.core.compression import fit_reducer
from sparsetrain.core.compression import transform as reduce
from sparsetrain.core.data import Standardizer, dataset_from_frame, load_digits_dataset, split_dataset
from sparsetrain.core.export import FeatureMajorChain
from sparsetrain.core.models import build_model, prunable_weights
from sparsetrain.core.penalties import make_penalty
from sparsetrain.core.predictor import AffineReducer, SparseInference, check_rows
from sparsetrain.core.sparsity.masks import density_of
from sparsetrain.core.sparsity.pruner import make_pruner
from sparsetrain.core.training import TrainSettings, fit
from sparsetrain.serving import build_predictor, input_example, log_served_model

LABELS = np.array(["bird", "cat", "dog"])


# --------------------------------------------------------------------------------------------
# fixtures: one store, three registered models (digits linear, digits MLP at 10%, a string-label table)


def train(dataset, kind, reducer_method=None, pruning="none", penalty="none", epochs=4):
    """Standardize, reduce, fit: the pipeline's steps on a small dataset, in a few seconds."""
    splits = split_dataset(dataset, val_size=0.1, test_size=0.2, seed=0)
    scaler = Standardizer().fit(splits.X_train)
    X_train, X_val = scaler.transform(splits.X_train), scaler.transform(splits.X_val)
    reducer = None
    if reducer_method:
        reducer, _ = fit_reducer(reducer_method, 4, X_train)
        X_train, X_val = reduce(reducer, X_train), reduce(reducer, X_val)
    torch.manual_seed(0)
    n_outputs = len(np.unique(dataset.y)) if dataset.task == "classification" else 1
    network = build_model(kind, X_train.shape[1], n_outputs, hidden=(300, 100))
    network, _ = fit(
        network, X_train, splits.y_train, X_val, splits.y_val, task=dataset.task,
        settings=TrainSettings(epochs=epochs, batch_size=64, early_stopping=None, device="cpu"),
        penalty=make_penalty(penalty, 1e-3 if penalty != "none" else 0.0), pruner=make_pruner(pruning, target_density=0.1),
    )
    return build_predictor(scaler, reducer, network, dataset), splits.X_test


def string_label_table(rows=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 6))
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    frame["animal"] = LABELS[(X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)]
    return frame


def register(name, predictor, example, policy="auto"):
    with mlflow.start_run():
        uri = log_served_model(predictor, example, policy=policy)
    version = mlflow.register_model(uri, name).version
    MlflowClient().set_registered_model_alias(name, "champion", version)
    return uri


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    # An explicit artifact location: by default a SQLite store puts them under ./mlartifacts.
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("serving", artifact_location=str(root / "art")))
    yield uri, root
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


@pytest.fixture(scope="module")
def models(store, digits):
    """name -> (predictor, test rows as users send them, model URI)."""
    out = {}
    linear, X_test = train(digits, "linear", penalty="l1")
    mlp, _ = train(digits, "mlp", pruning="gmp")
    table = dataset_from_frame(string_label_table(), "animal", "classification")
    tab, tab_test = train(table, "mlp", reducer_method="pca", pruning="gmp")
    tab_rows = pd.DataFrame(tab_test.astype(np.float64), columns=list(table.feature_names))
    for name, predictor, rows, dataset in (
        ("digits-linear", linear, X_test.astype(np.float64), digits),
        ("digits-mlp", mlp, X_test.astype(np.float64), digits),
        ("table-mlp", tab, tab_rows, table),
    ):
        out[name] = (predictor, rows, register(name, predictor, input_example(dataset)))
    return out


def champion(name):
    return mlflow.pyfunc.load_model(f"models:/{name}@champion")


# --------------------------------------------------------------------------------------------
# the logged model


@pytest.mark.parametrize("name", ["digits-linear", "digits-mlp", "table-mlp"])
def test_logged_model_has_no_pickle_and_carries_the_sparse_export(models, name, tmp_path):
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion", dst_path=str(tmp_path)))
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    assert not [f for f in files if f.endswith((".pkl", ".pickle"))], "a pickled file in the logged model"
    assert {"artifacts/model.sparse.safetensors", "artifacts/preprocessing.safetensors", "artifacts/served.json",
            "served_model.py", "input_example.json"} <= set(files)
    flavor = mlflow.models.Model.load(str(folder / "MLmodel")).flavors["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model" and "python_model" not in flavor
    assert "cloudpickle" not in (folder / "requirements.txt").read_text()
    spec = json.loads((folder / "artifacts" / "served.json").read_text())
    assert spec["format"] == "sparsetrain-served-v1" and spec["inference"]["policy"] == "auto"
    signature = champion(name).metadata.signature
    assert signature.inputs is not None and signature.outputs is not None
    assert signature.params.to_dict() == [{"name": "output", "type": "string", "default": "labels", "shape": None}]


@pytest.mark.parametrize("name", ["digits-linear", "digits-mlp", "table-mlp"])
def test_pyfunc_predicts_what_the_in_process_predictor_does(models, name):
    predictor, rows, _ = models[name]
    model = champion(name)
    want = predictor.predict(rows)
    np.testing.assert_array_equal(np.asarray(model.predict(rows)), want)
    if name.startswith("digits"):  # array sources also take a frame, its columns by position
        frame = pd.DataFrame(rows, columns=[str(i) for i in range(rows.shape[1])])
        np.testing.assert_array_equal(np.asarray(model.predict(frame)), want)
    else:  # string labels stay strings
        assert set(np.asarray(model.predict(rows))) <= set(LABELS)
    probabilities = model.predict(rows, params={"output": "probabilities"})
    assert list(probabilities.columns) == (list(LABELS) if name == "table-mlp" else [str(i) for i in range(10)])
    assert np.abs(probabilities.to_numpy() - predictor.predict_proba(rows)).max() <= 1e-6


def test_the_sparse_mlp_and_its_dense_policy_twin_answer_alike(models, digits):
    predictor, rows, _ = models["digits-mlp"]
    register("digits-mlp-dense", predictor, input_example(digits), policy="dense")
    auto, dense = champion("digits-mlp"), champion("digits-mlp-dense")
    assert auto.unwrap_python_model().predictor.inference.uses_chain(len(rows))
    assert not dense.unwrap_python_model().predictor.inference.uses_chain(len(rows))
    np.testing.assert_array_equal(auto.predict(rows), dense.predict(rows))
    p_auto = auto.predict(rows, params={"output": "probabilities"}).to_numpy()
    p_dense = dense.predict(rows, params={"output": "probabilities"}).to_numpy()
    assert np.abs(p_auto - p_dense).max() <= 1e-6


def test_a_regression_serves_values_and_refuses_probabilities(store):
    frame = string_label_table().drop(columns="animal")
    frame["price"] = 3 * frame["f0"] - frame["f4"] + 0.1
    dataset = dataset_from_frame(frame, "price", "regression")
    predictor, X_test = train(dataset, "linear", penalty="l1")
    register("table-regression", predictor, input_example(dataset))
    rows = pd.DataFrame(X_test.astype(np.float64), columns=list(dataset.feature_names))
    model = champion("table-regression")
    np.testing.assert_allclose(model.predict(rows), predictor.predict(rows), rtol=1e-6, atol=1e-6)
    with pytest.raises(MlflowException, match="need a classifier"):
        model.predict(rows, params={"output": "probabilities"})


def test_the_model_loads_where_sparsetrain_is_not_installed(store, models, tmp_path):
    _, rows, _ = models["table-mlp"]
    rows.to_csv(tmp_path / "rows.csv", index=False)
    script = (
        "import importlib.util, sys\nfrom pathlib import Path\n"
        "sys.path = [p for p in sys.path if not (Path(p) / 'sparsetrain').is_dir()]\n"
        "assert importlib.util.find_spec('sparsetrain') is None\n"
        "import mlflow, pandas as pd\n"
        "model = mlflow.pyfunc.load_model('models:/table-mlp@champion')\n"
        "print(','.join(model.predict(pd.read_csv(sys.argv[1]))))\n"
        "import sparsetrain; print(sparsetrain.__file__)\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": store[0]}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "rows.csv")], check=False,
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    labels, location = done.stdout.strip().splitlines()[-2:]
    assert labels.split(",") == list(champion("table-mlp").predict(rows))
    assert "/code/sparsetrain/" in location


# --------------------------------------------------------------------------------------------
# sparse where it is faster


def pruned_mlp(n_features, hidden, density, seed=0):
    torch.manual_seed(seed)
    network = build_model("mlp", n_features, 10, hidden=hidden)
    with torch.no_grad():
        for weight in prunable_weights(network):
            weight.mul_((torch.rand(weight.shape) < density).float())
    return network.eval()


def test_auto_takes_the_csr_chain_for_a_sparse_mlp_at_batch_64_and_dense_kernels_for_a_dense_one(models):
    sparse = SparseInference.of(pruned_mlp(784, (300, 100), 0.1))
    assert sparse.uses_chain(64) and not sparse.uses_chain(1)
    assert any(isinstance(m, FeatureMajorChain) for m in sparse.module(64).modules())
    assert sparse.module(1) is sparse.dense
    dense = SparseInference.of(pruned_mlp(784, (300, 100), 1.0))
    assert not dense.uses_chain(64) and not dense.uses_chain(4096)
    tiny = SparseInference.of(build_model("linear", 64, 10))  # 640 weights: dense kernels win
    assert not tiny.uses_chain(4096)
    trained = models["digits-mlp"][0].network  # gmp to 10% on digits: 64-300-100-10
    assert abs(density_of(list(prunable_weights(trained))) - 0.1) < 0.01
    assert SparseInference.of(trained).uses_chain(64)


@pytest.mark.parametrize("policy, rows, chain", [("dense", 4096, False), ("sparse", 1, True), ("auto", 2, True)])
def test_the_policy_can_be_forced(policy, rows, chain):
    assert SparseInference.of(pruned_mlp(784, (300, 100), 0.05), policy).uses_chain(rows) is chain


def test_chain_and_dense_kernels_give_the_same_outputs():
    inference = SparseInference.of(pruned_mlp(784, (300, 100), 0.1))
    x = torch.randn(64, 784)
    with torch.inference_mode():
        torch.testing.assert_close(inference.chain(x), inference.dense(x), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# preprocessing without pickle


@pytest.mark.parametrize("reducer", [
    PCA(n_components=5, random_state=0), PCA(n_components=5, whiten=True, random_state=0),
    TruncatedSVD(n_components=5, random_state=0), GaussianRandomProjection(n_components=5, random_state=0),
    SparseRandomProjection(n_components=5, dense_output=True, random_state=0),
], ids=["pca", "pca-whiten", "svd", "gaussian-rp", "sparse-rp"])
def test_every_reducer_is_the_affine_map_it_is_stored_as(reducer, rng):
    X = rng.normal(size=(200, 12)).astype(np.float32)
    reducer.fit(X)
    np.testing.assert_allclose(reduce(AffineReducer.of(reducer), X), reduce(reducer, X), atol=1e-5)


# --------------------------------------------------------------------------------------------
# bad rows


NAMES = ("a", "b", "c")


@pytest.mark.parametrize("rows, words", [
    (np.ones((1, 2)), ["3 features", "2 column"]),
    (pd.DataFrame({"a": [1.0], "b": [2.0]}), ["lacks", "'c'"]),
    (pd.DataFrame({"a": [1.0], "b": [np.nan], "c": [3.0]}), ["'b'", "NaN"]),
    (np.array([[1.0, np.inf, 3.0]]), ["'b'", "infinite"]),
    (np.array([[1.0, 2.0, 1e39]]), ["'c'", "too large for float32"]),
    (pd.DataFrame({"a": [1.0], "b": ["abc"], "c": [3.0]}), ["'b'", "non-numeric", "'abc'"]),
    (np.array([[1.0, "abc", 3.0]], dtype=object), ["column 1", "'abc'"]),
    (np.ones((0, 3)), ["no rows"]),
])
def test_bad_rows_raise_one_line_naming_the_problem(rows, words):
    with pytest.raises(ValueError) as error:
        check_rows(rows, NAMES)
    message = str(error.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_pyfunc_turns_bad_rows_into_invalid_parameter_errors(models):
    _, rows, _ = models["digits-mlp"]
    bad = rows[:2].copy()
    bad[1, 3] = np.nan
    with pytest.raises(MlflowException) as error:
        champion("digits-mlp").predict(bad)
    assert error.value.get_http_status_code() == 400 and "'pixel_0_3' (column 3) is NaN" in error.value.message
    with pytest.raises(MlflowException, match="output 'odds' is unknown"):
        champion("digits-mlp").predict(rows[:2], params={"output": "odds"})


# --------------------------------------------------------------------------------------------
# mlflow models serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow models serve` of ``models:/<name>@champion`` in its own process group."""

    def __init__(self, name: str, tracking_uri: str, log: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        self.log = log
        self.proc = subprocess.Popen(
            ["mlflow", "models", "serve", "-m", f"models:/{name}@champion", "--env-manager", "local",
             "--host", "127.0.0.1", "-p", port],
            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}, stdout=log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow models serve exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"mlflow models serve did not answer /ping in {timeout:.0f} s")

    def post(self, body: str, content_type: str = "application/json") -> tuple[int, dict]:
        request = urllib.request.Request(self.url + "/invocations", body.encode(), {"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def split(frame: pd.DataFrame, **extra) -> str:
    """A ``dataframe_split`` body, floats at full precision (``to_json`` rounds to 10 digits)."""
    return json.dumps({"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}, **extra})


def assert_refused(answer, *words):
    status, body = answer
    assert 400 <= status < 500, (status, body)
    assert all(w in body["message"] for w in words), body["message"][-500:]


@pytest.mark.slow
def test_mlflow_models_serve_answers_like_pyfunc_and_refuses_bad_requests(store, models, tmp_path):
    servers = {name: Server(name, store[0], tmp_path / f"{name}.log") for name in ("digits-mlp", "table-mlp")}
    try:
        for server in servers.values():
            server.wait()

        # digits: rows as the lifecycle check sends them, columns "0".."63"
        digits, (_, rows, _) = servers["digits-mlp"], models["digits-mlp"]
        frame = pd.DataFrame(rows[:40], columns=[str(i) for i in range(64)])
        model = champion("digits-mlp")
        status, body = digits.post(split(frame))
        assert status == 200 and body["predictions"] == model.predict(frame).tolist()
        status, body = digits.post(split(frame, params={"output": "probabilities"}))
        served = pd.DataFrame(body["predictions"])[[str(i) for i in range(10)]].to_numpy()
        want = model.predict(frame, params={"output": "probabilities"}).to_numpy()
        assert status == 200 and np.abs(served - want).max() <= 1e-6
        assert_refused(digits.post(json.dumps({"dataframe_split": {"columns": ["0", "1"], "data": [[1, 2]]}})),
                       "2 columns", "(-1, 64)")
        nan = frame.iloc[:2].copy()
        nan.iloc[1, 5] = np.nan
        assert_refused(digits.post(split(nan)), "'pixel_0_5' (column 5) is NaN")
        text = frame.iloc[:2].astype(object)
        text.iloc[0, 7] = "seven"
        assert_refused(digits.post(split(text)), "could not convert string to float: 'seven'")
        status, body = digits.post(split(frame.iloc[:3]))
        assert status == 200 and body["predictions"] == model.predict(frame.iloc[:3]).tolist()

        # a table with string labels, as JSON and as CSV
        table, (_, rows, _) = servers["table-mlp"], models["table-mlp"]
        want = champion("table-mlp").predict(rows).tolist()
        assert table.post(split(rows)) == (200, {"predictions": want})
        assert table.post(rows.to_csv(index=False), "text/csv") == (200, {"predictions": want})
        assert_refused(table.post(rows[["f0", "f1"]].to_csv(index=False), "text/csv"), "missing inputs ['f2'")
        csv_nan = rows.iloc[:2].copy()
        csv_nan.iloc[0, 2] = np.nan
        assert_refused(table.post(csv_nan.to_csv(index=False), "text/csv"), "'f2' (column 2) is NaN")
        assert_refused(table.post("f0,f1,f2,f3,f4,f5\n1,2,x,4,5,6\n", "text/csv"), "could not convert string to float: 'x'")
        assert table.post(rows.to_csv(index=False), "text/csv") == (200, {"predictions": want})
    finally:
        for server in servers.values():
            server.stop()
