import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from sparsetrain.core.export import (
    FORMAT,
    METADATA_KEY,
    FeatureMajorChain,
    from_bytes,
    load_sparse,
    save_sparse,
    sparse_state,
    to_bytes,
    to_sparse_inference,
)
from sparsetrain.core.models import build_model, prunable_weights

from sparse_models import sparsify


@pytest.mark.parametrize("density", [1.0, 0.3, 0.1, 0.01, 0.0])
def test_round_trip_is_exact(tmp_path, density):
    torch.manual_seed(0)
    model = sparsify(build_model("mlp", 64, 10, hidden=(48, 24), batch_norm=True), density)
    size = save_sparse(model, tmp_path / "m.safetensors")
    assert size == (tmp_path / "m.safetensors").stat().st_size
    loaded = load_sparse(tmp_path / "m.safetensors")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    x = torch.randn(5, 64)
    model.eval()
    assert torch.equal(model(x), loaded(x))


def test_file_holds_no_pickle(tmp_path):
    model = sparsify(build_model("linear", 20, 3), 0.5)
    data = to_bytes(model)
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(data)


def seeded_model():
    """The same model, bit for bit, in every process: a CNN (kernels, BatchNorm) and CSR and
    bitmask encodings, so that every kind of metadata is in the file."""
    torch.manual_seed(0)
    return sparsify(build_model("cnn", 64, 10, image_shape=(1, 8, 8), batch_norm=True), 0.02)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


TESTS = Path(__file__).resolve().parents[1]
SHA_IN_A_FRESH_PROCESS = f"""
import hashlib, runpy, sys
sys.path.insert(0, {str(TESTS)!r})  # the tests' helper modules (sparse_models)
from sparsetrain.core.export import to_bytes
model = runpy.run_path({__file__!r})["seeded_model"]()
print(hashlib.sha256(to_bytes(model)).hexdigest())
"""


def test_the_same_model_gives_the_same_bytes_in_one_process(tmp_path):
    assert sha256(to_bytes(seeded_model())) == sha256(to_bytes(seeded_model()))
    save_sparse(seeded_model(), tmp_path / "a.safetensors")
    save_sparse(seeded_model(), tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_the_same_model_gives_the_same_bytes_in_fresh_processes():
    """safetensors writes its metadata map in a per-process hash order: with several metadata keys
    the three hashes here (two fresh processes and this one) all agreed about one run in 36."""
    hashes = {
        subprocess.run(
            [sys.executable, "-c", SHA_IN_A_FRESH_PROCESS], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert hashes == {sha256(to_bytes(seeded_model()))}


def test_files_with_the_former_metadata_keys_still_load():
    model = seeded_model().eval()
    tensors, metadata = sparse_state(model)
    header = json.loads(metadata[METADATA_KEY])
    former = {"format": header["format"], **{k: json.dumps(header[k]) for k in ("architecture", "encodings")}}
    loaded = from_bytes(st_save(tensors, metadata=former))
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded(x), model(x))


def test_a_file_of_another_format_is_refused():
    tensors, _ = sparse_state(seeded_model())
    with pytest.raises(ValueError, match=FORMAT):
        from_bytes(st_save(tensors, metadata={"format": "something-else"}))


def test_ten_percent_density_stores_at_most_fifteen_percent_of_dense_bytes():
    torch.manual_seed(0)
    model = sparsify(build_model("mlp", 784, 10, hidden=(300, 100)), 0.1)
    dense_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert len(to_bytes(model)) <= 0.15 * dense_bytes


def test_structurally_pruned_mlp_round_trips():
    """A network whose hidden sizes differ from its build arguments (structured pruning)."""
    torch.manual_seed(0)
    small = build_model("mlp", 16, 3, hidden=(8,))
    small.arch["hidden"] = [32]  # as if built larger, then shrunk
    loaded = from_bytes(to_bytes(small))
    x = torch.randn(4, 16)
    assert torch.equal(small.eval()(x), loaded(x))


def chains(model):
    return [m for m in model.modules() if isinstance(m, FeatureMajorChain)]


@pytest.mark.parametrize("rows", [1, 7, 128, 300])  # inside one block, exactly one, several + a rest
def test_sparse_inference_matches_dense(rows):
    torch.manual_seed(0)
    model = sparsify(build_model("mlp", 64, 10, hidden=(128, 32)), 0.05).eval()
    sparse = to_sparse_inference(model)
    assert [c.sparse_layers for c in chains(sparse)] == [3]
    x = torch.randn(rows, 64)
    with torch.inference_mode():
        out = sparse(x)
        assert out.shape == (rows, 10) and out.is_contiguous()
        np.testing.assert_allclose(out.numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_sparse_inference_folds_batch_norm_and_skips_dropout():
    torch.manual_seed(0)
    model = sparsify(build_model("mlp", 32, 4, hidden=(64, 16), batch_norm=True, dropout=0.3), 0.1)
    model.train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(5):
            model(torch.randn(50, 32) * 3 + 1)
    model.eval()
    sparse = to_sparse_inference(model)
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.Dropout)) for m in sparse.modules())
    x = torch.randn(200, 32)
    with torch.inference_mode():
        np.testing.assert_allclose(sparse(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-5)


def test_sparse_inference_keeps_convolutions_and_chains_the_head():
    torch.manual_seed(0)
    model = sparsify(build_model("cnn", 64, 10, image_shape=(1, 8, 8)), 0.1).eval()
    sparse = to_sparse_inference(model)
    assert any(isinstance(m, torch.nn.Conv2d) for m in sparse.modules())
    assert len(chains(sparse)) == 1 and chains(sparse)[0].sparse_layers == 3  # tanh head, 3 Linear
    x = torch.randn(40, 64)
    with torch.inference_mode():
        np.testing.assert_allclose(sparse(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_only_layers_at_or_below_max_density_become_csr():
    torch.manual_seed(0)
    model = build_model("mlp", 64, 10, hidden=(128,)).eval()
    sparsify_layer = prunable_weights(model)[0]
    with torch.no_grad():
        sparsify_layer.mul_((torch.rand(sparsify_layer.shape) < 0.1).float())
    sparse = to_sparse_inference(model, max_density=0.3)
    (chain,) = chains(sparse)
    assert chain.weight0.layout == torch.sparse_csr and chain.weight0.col_indices().dtype == torch.int32
    assert chain.weight1.layout == torch.strided  # the dense output layer
    x = torch.randn(9, 64)
    with torch.inference_mode():
        np.testing.assert_allclose(sparse(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_dense_layers_stay_dense():
    model = build_model("linear", 10, 2)
    assert not chains(to_sparse_inference(model))
    model = build_model("mlp", 10, 2, hidden=(8,))
    assert not chains(to_sparse_inference(model))


def test_structurally_pruned_cnn_round_trips():
    """Channels and fully connected widths are read off the shrunk network."""
    from sparsetrain.core.sparsity.pruner import StructuredPruner
    from sparsetrain.core.sparsity.schedules import CubicSchedule
    from sparsetrain.core.training import TrainSettings, fit

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    X, y = rng.random((120, 64), dtype=np.float32), rng.integers(0, 10, 120)
    pruner = StructuredPruner(CubicSchedule(final_density=0.25, start=0.0, end=0.75), finetune_epochs=1)
    model, _ = fit(build_model("cnn", 64, 10, image_shape=(1, 8, 8)), X, y, X, y, task="classification",
                   settings=TrainSettings(epochs=3), pruner=pruner)
    loaded = from_bytes(to_bytes(model))
    x = torch.from_numpy(X[:5])
    assert torch.equal(model(x), loaded(x))


def test_corrupt_csr_indices_are_refused_not_crashed_on():
    """A file whose CSR indices point outside the matrix fails with an error, not a segfault."""
    from sparsetrain.core.export import _metadata

    torch.manual_seed(0)
    model = sparsify(build_model("mlp", 64, 10, hidden=(32,)), 0.01)
    data = to_bytes(model)
    tensors, metadata = st_load(data), _metadata(data)
    (name,) = [k for k in tensors if k.endswith("::indices")][:1]
    tensors[name] = tensors[name] + 10_000
    with pytest.raises(RuntimeError):
        from_bytes(st_save(tensors, metadata=metadata))
