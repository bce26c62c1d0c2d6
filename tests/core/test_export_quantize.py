"""Quantized sparse export (fp16 / int8 values, relative indices, zlib): round-trip bounds,
zeros, shapes, byte-reproducibility, and the unquantized format left as it was."""

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsetrain.core.export import (
    FORMAT,
    FORMAT_QUANTIZED,
    METADATA_KEY,
    _metadata,
    from_bytes,
    load_sparse,
    save_sparse,
    to_bytes,
)
from sparsetrain.core.models import build_model, prunable_weights

from sparse_models import sparsify


def seeded_model(density=0.05):
    """An MLP (gaps at low density, bitmask at high) and a CNN (conv kernels) in one list."""
    torch.manual_seed(0)
    return [
        sparsify(build_model("mlp", 300, 10, hidden=(64, 32), batch_norm=True), density),
        sparsify(build_model("cnn", 64, 10, image_shape=(1, 8, 8), batch_norm=True), density),
    ]


def weights(model):
    return [w.detach().reshape(w.shape[0], -1) for w in prunable_weights(model)]


def encodings(data):
    return json.loads(_metadata(data)[METADATA_KEY])["encodings"]


@pytest.mark.parametrize("density", [0.0, 0.01, 0.05, 0.3, 1.0])
@pytest.mark.parametrize("kind", [0, 1])
def test_int8_error_is_at_most_half_a_scale_step_per_row(density, kind):
    model = seeded_model(density)[kind]
    loaded = from_bytes(to_bytes(model, quantize="int8"))
    for w, q in zip(weights(model), weights(loaded)):
        assert q.shape == w.shape
        step = w.abs().amax(dim=1, keepdim=True) / 127
        assert torch.all((q - w).abs() <= step / 2 * (1 + 1e-5) + 1e-12)
        assert torch.all(q[w == 0] == 0)  # zeros stay exact


@pytest.mark.parametrize("density", [0.0, 0.01, 0.05, 0.3, 1.0])
def test_fp16_relative_error_is_bounded(density):
    model = seeded_model(density)[0]
    loaded = from_bytes(to_bytes(model, quantize="fp16"))
    for w, q in zip(weights(model), weights(loaded)):
        assert q.shape == w.shape
        assert torch.all((q - w).abs() <= 2**-11 * w.abs() + 2**-25)
        assert torch.all(q[w == 0] == 0)


@pytest.mark.parametrize("quantize", ["fp16", "int8"])
def test_everything_but_the_prunable_weights_is_exact(quantize):
    model = seeded_model()[0]
    loaded = from_bytes(to_bytes(model, quantize=quantize))
    sparse = {n for n, p in model.named_parameters() if any(p is w for w in prunable_weights(model))}
    for name, value in model.state_dict().items():
        if name not in sparse:
            assert torch.equal(value, loaded.state_dict()[name]), name


def test_low_density_uses_relative_indices_and_high_density_the_bitmask():
    low = encodings(to_bytes(seeded_model(0.05)[0], quantize="int8"))
    high = encodings(to_bytes(seeded_model(0.5)[0], quantize="int8"))
    assert {e["encoding"] for e in low.values()} == {"gaps"}
    assert {e["encoding"] for e in high.values()} == {"bitmask"}
    assert {e["streams"]["gaps"][0] for e in low.values()} <= {"|u1", "<u2"}


def test_wide_gaps_use_uint16_and_round_trip():
    model = build_model("linear", 1000, 2)
    with torch.no_grad():
        w = prunable_weights(model)[0]
        w.zero_()
        w[0, 0], w[0, 999], w[1, 500] = 1.0, -2.0, 0.5
    data = to_bytes(model, quantize="fp16", compress=False)
    (info,) = encodings(data).values()
    assert info["streams"]["gaps"] == ["<u2", "raw"]
    assert torch.equal(weights(from_bytes(data))[0], weights(model)[0])


@pytest.mark.parametrize("quantize", ["fp16", "int8"])
def test_quantized_files_are_smaller_and_load_from_disk_without_pickle(tmp_path, quantize):
    model = seeded_model()[0]
    size = save_sparse(model, tmp_path / "q.safetensors", quantize=quantize)
    assert size == (tmp_path / "q.safetensors").stat().st_size < len(to_bytes(model))
    assert size <= len(to_bytes(model, quantize=quantize, compress=False))
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads((tmp_path / "q.safetensors").read_bytes())
    loaded = load_sparse(tmp_path / "q.safetensors")
    x = torch.randn(4, 300)
    assert loaded(x).shape == (4, 10)


def test_none_writes_the_v1_format_unchanged():
    model = seeded_model()[1]
    assert to_bytes(model) == to_bytes(model, quantize="none")
    assert json.loads(_metadata(to_bytes(model))[METADATA_KEY])["format"] == FORMAT
    assert json.loads(_metadata(to_bytes(model, quantize="int8"))[METADATA_KEY])["format"] == FORMAT_QUANTIZED


def test_an_unknown_quantize_is_refused():
    with pytest.raises(ValueError, match="quantize must be one of none, fp16, int8"):
        to_bytes(seeded_model()[0], quantize="int4")


def test_a_corrupt_index_stream_is_refused():
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    data = to_bytes(seeded_model()[0], quantize="int8", compress=False)
    tensors, metadata = st_load(data), _metadata(data)
    header = json.loads(metadata[METADATA_KEY])
    name = next(iter(header["encodings"]))
    tensors[f"{name}::counts"] = tensors[f"{name}::counts"][:-1].clone()
    with pytest.raises(ValueError, match="corrupt sparse file"):
        from_bytes(st_save(tensors, metadata=metadata))


TESTS = Path(__file__).resolve().parents[1]
SHA_IN_A_FRESH_PROCESS = f"""
import hashlib, runpy, sys
sys.path.insert(0, {str(TESTS)!r})  # the tests' helper modules (sparse_models)
from sparsetrain.core.export import to_bytes
models = runpy.run_path({__file__!r})["seeded_model"]()
print(" ".join(hashlib.sha256(to_bytes(m, quantize=q)).hexdigest() for m in models for q in ("fp16", "int8")))
"""


def test_quantized_bytes_are_reproducible_across_processes():
    here = " ".join(
        hashlib.sha256(to_bytes(m, quantize=q)).hexdigest() for m in seeded_model() for q in ("fp16", "int8")
    )
    there = subprocess.run(
        [sys.executable, "-c", SHA_IN_A_FRESH_PROCESS], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert there == here


def test_all_zero_model_round_trips():
    model = seeded_model(0.0)[0]
    for quantize in ("fp16", "int8"):
        loaded = from_bytes(to_bytes(model, quantize=quantize))
        assert all(np.count_nonzero(w.numpy()) == 0 for w in weights(loaded))


def test_a_bad_export_quantize_is_one_line_naming_the_key():
    from sparsetrain.config import parse_config
    from sparsetrain.errors import SparsetrainError

    assert parse_config({}).export.quantize == "none"
    assert parse_config({"export": {"quantize": "int8"}}).flat()["export.quantize"] == "int8"
    with pytest.raises(SparsetrainError) as error:
        parse_config({"export": {"quantize": "int4"}})
    assert str(error.value).startswith("export.quantize") and "\n" not in str(error.value)


def fitted_linear(task):
    """A least-squares linear model on a separable / linear problem, sparsified to half its weights."""
    from sparsetrain.core.data import DatasetInfo, Splits

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 20)).astype(np.float32)
    truth = rng.normal(size=(20, 3)) * (rng.random((20, 3)) < 0.5)
    y = (X @ truth).argmax(1) if task == "classification" else X @ truth[:, 0]
    model = build_model("linear", 20, 3 if task == "classification" else 1)
    with torch.no_grad():
        w = truth.T if task == "classification" else truth[:, :1].T
        prunable_weights(model)[0].copy_(torch.as_tensor(w, dtype=torch.float32))
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    splits = Splits(X[:300], y[:300], X[:0], y[:0], X[300:], y[300:])
    n_classes = 3 if task == "classification" else None
    info = DatasetInfo(task, 400, 20, tuple(f"x{i}" for i in range(20)), n_classes=n_classes)
    return model, splits, info


@pytest.mark.parametrize("task,metric", [("classification", "test_accuracy"), ("regression", "test_r2")])
@pytest.mark.parametrize("quantize", ["fp16", "int8"])
def test_quantized_metrics_score_the_decoded_file(task, metric, quantize):
    from sparsetrain.scoring import quantized_metrics

    model, splits, info = fitted_linear(task)
    metrics = quantized_metrics(model, splits, info, quantize)
    assert set(metrics) == {"bytes_quantized", f"{metric}_quantized"}
    assert metrics["bytes_quantized"] == len(to_bytes(model, quantize=quantize))  # tiny: header-bound
    assert metrics[f"{metric}_quantized"] > 0.95
    assert quantized_metrics(model, splits, info, "none") == {}


def test_the_evaluation_node_adds_the_quantized_metrics_of_export_quantize():
    from sparsetrain.config import ExportConfig
    from sparsetrain.core.training import History
    from sparsetrain.pipelines.evaluation import create_pipeline
    from sparsetrain.pipelines.evaluation.nodes import evaluate_model

    (node,) = [n for n in create_pipeline().nodes if n.name == "evaluate_model"]
    assert "config:export" in node.inputs
    model, splits, info = fitted_linear("classification")
    history = History(epochs_run=1)
    assert "bytes_quantized" not in evaluate_model(model, splits, info, history, ExportConfig())
    metrics = evaluate_model(model, splits, info, history, ExportConfig(quantize="int8"))
    assert metrics["bytes_quantized"] > 0 and metrics["test_accuracy_quantized"] > 0.95


def test_streams_are_compressed_where_it_helps_and_an_unknown_codec_is_refused():
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    data = to_bytes(seeded_model()[0], quantize="int8")
    header = json.loads(_metadata(data)[METADATA_KEY])
    codecs = {codec for e in header["encodings"].values() for _, codec in e["streams"].values()}
    assert codecs <= {"raw", "zlib", "lzma"} and codecs - {"raw"}
    name = next(iter(header["encodings"]))
    header["encodings"][name]["streams"]["values"][1] = "gzip"

    with pytest.raises(ValueError, match="corrupt sparse file"):
        from_bytes(st_save(st_load(data), metadata={METADATA_KEY: json.dumps(header, sort_keys=True)}))
