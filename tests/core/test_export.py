import pickle

import numpy as np
import pytest
import torch

from sparsetrain.core.export import from_bytes, load_sparse, save_sparse, to_bytes, to_sparse_inference
from sparsetrain.core.models import build_model, prunable_weights


def sparsify(model, density, seed=0):
    """Keep a random ``density`` fraction of every prunable weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for w in prunable_weights(model):
            w.mul_((torch.rand(w.shape, generator=g) < density).float())
    return model


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


def test_sparse_inference_matches_dense():
    torch.manual_seed(0)
    model = sparsify(build_model("mlp", 64, 10, hidden=(128,)), 0.05).eval()
    sparse = to_sparse_inference(model)
    assert any(type(m).__name__ == "SparseLinear" for m in sparse.modules())
    x = torch.randn(32, 64)
    np.testing.assert_allclose(sparse(x).detach().numpy(), model(x).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_dense_layers_stay_dense():
    model = build_model("linear", 10, 2)
    assert not any(type(m).__name__ == "SparseLinear" for m in to_sparse_inference(model).modules())


def test_structurally_pruned_cnn_round_trips():
    """Channels and fully connected widths are read off the shrunk network."""
    from sparsetrain.config import TrainingConfig
    from sparsetrain.core.sparsity.pruner import StructuredPruner
    from sparsetrain.core.sparsity.schedules import CubicSchedule
    from sparsetrain.core.training import fit

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    X, y = rng.random((120, 64), dtype=np.float32), rng.integers(0, 10, 120)
    pruner = StructuredPruner(CubicSchedule(final_density=0.25, start=0.0, end=0.75), finetune_epochs=1)
    model, _ = fit(build_model("cnn", 64, 10, image_shape=(1, 8, 8)), X, y, X, y, task="classification",
                   settings=TrainingConfig(epochs=3, verbose=False), pruner=pruner)
    loaded = from_bytes(to_bytes(model))
    x = torch.from_numpy(X[:5])
    assert torch.equal(model(x), loaded(x))
