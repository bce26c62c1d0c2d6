"""Pruners: exact densities, masks that hold through optimizer steps, structured slicing, pickling,
and one fit on digits per method."""

from __future__ import annotations

import pickle

import pytest
import torch
from digits_data import standardized_digits
from torch import nn

from sparsetrain.core.models import build_model, prunable_weights
from sparsetrain.core.penalties import make_penalty
from sparsetrain.core.sparsity.dynamic import RigLPruner, SETPruner
from sparsetrain.core.sparsity.masks import density_of, n_keep
from sparsetrain.core.sparsity.pruner import (
    PRUNING_METHODS,
    MagnitudePruner,
    NMPruner,
    NoPruning,
    Pruner,
    StructuredPruner,
    ThresholdPruner,
    make_pruner,
)
from sparsetrain.core.sparsity.schedules import ConstantSchedule, CubicSchedule
from sparsetrain.core.sparsity.surgery import hidden_layers
from sparsetrain.core.training import TrainSettings, fit
from sparsetrain.errors import SparsetrainError

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda p: torch.optim.Adam(p, lr=0.05),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
}


def small_mlp(seed=0, **kwargs) -> nn.Sequential:
    torch.manual_seed(seed)
    return build_model("mlp", 12, 3, hidden=(10, 8), **kwargs)


def small_cnn(seed=0, **kwargs) -> nn.Sequential:
    torch.manual_seed(seed)
    return build_model("cnn", 64, 4, image_shape=(1, 8, 8), **kwargs)


def batch(model: nn.Module, n=32, seed=0):
    n_in = model[1].in_features if isinstance(model[1], nn.Linear) else 64
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_in, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def train_steps(model, optimizer, pruner, steps=5, seed=0):
    model.train()
    for i in range(steps):
        x, y = batch(model, seed=seed + i)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        pruner.after_step()


def test_make_pruner_builds_every_method():
    kinds = {
        "none": NoPruning,
        "threshold": ThresholdPruner,
        "gmp": MagnitudePruner,
        "structured": StructuredPruner,
        "set": SETPruner,
        "rigl": RigLPruner,
        "nm": NMPruner,
    }
    assert PRUNING_METHODS == tuple(kinds)
    for name in PRUNING_METHODS:
        pruner = make_pruner(name, target_density=0.3, threshold=0.01, finetune_epochs=2)
        assert isinstance(pruner, kinds[name]) and isinstance(pruner, Pruner)
    gmp = make_pruner("gmp", target_density=0.3, scope="global", prune_start=0.1, prune_end=0.5)
    assert gmp == MagnitudePruner(CubicSchedule(final_density=0.3, start=0.1, end=0.5), scope="global")
    threshold = make_pruner("threshold", threshold=0.01, finetune_epochs=2)
    assert threshold == ThresholdPruner(threshold=0.01, finetune_epochs=2)
    with pytest.raises(SparsetrainError, match="sparsity.pruning"):
        make_pruner("random")


def test_invalid_pruner_settings_fail_with_the_key():
    with pytest.raises(SparsetrainError, match="sparsity.scope"):
        MagnitudePruner(ConstantSchedule(0.5), scope="net")  # type: ignore[arg-type]
    with pytest.raises(SparsetrainError, match="sparsity.target_density"):
        StructuredPruner(ConstantSchedule(0.0))
    with pytest.raises(SparsetrainError, match="sparsity.finetune_epochs"):
        StructuredPruner(ConstantSchedule(0.5), finetune_epochs=1.5)  # type: ignore[arg-type]
    with pytest.raises(SparsetrainError, match="sparsity.threshold"):
        ThresholdPruner(threshold=-1.0)
    with pytest.raises(SparsetrainError, match="sparsity.finetune_epochs"):
        ThresholdPruner(finetune_epochs=-1)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_gmp_reaches_the_target_density_exactly_and_masks_only_shrink(scope):
    model = small_mlp()
    weights = prunable_weights(model)
    pruner = MagnitudePruner(CubicSchedule(final_density=0.1, start=0.0, end=0.75), scope=scope)
    pruner.attach(model, weights)
    total = pruner.total_epochs(8)
    assert total == 8 and pruner.frozen_from(total) == 6
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    previous, densities = None, []
    for epoch in range(total):
        pruner.on_epoch_start(epoch, total)
        masks = [m.clone() for m in pruner.masks]
        if previous is not None:
            assert all(not (m & ~p).any() for m, p in zip(masks, previous))
        previous = masks or None
        densities.append(density_of(weights))
        train_steps(model, optimizer, pruner, steps=3, seed=epoch)
    assert densities[0] == 1.0 and all(a >= b for a, b in zip(densities, densities[1:]))
    assert densities[3] > densities[6] == densities[7]
    if scope == "layer":
        assert [int(torch.count_nonzero(w)) for w in weights] == [n_keep(w.numel(), 0.1) for w in weights]
    else:
        total_weights = sum(w.numel() for w in weights)
        assert sum(int(torch.count_nonzero(w)) for w in weights) == n_keep(total_weights, 0.1)
    pruner.finalize(model)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_masked_weights_get_no_gradient_and_stay_zero_through_optimizer_steps(name):
    model = small_mlp()
    weights = prunable_weights(model)
    optimizer = OPTIMIZERS[name](model.parameters())
    pruner = MagnitudePruner(ConstantSchedule(1.0))
    pruner.attach(model, weights)
    train_steps(model, optimizer, pruner, steps=3)  # build up momentum / Adam state while dense
    pruner.prune_to(0.3)
    masks = pruner.masks
    for step in range(10):
        x, y = batch(model, seed=100 + step)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for w, mask in zip(weights, masks):
            assert torch.count_nonzero(w.grad[~mask]) == 0
            assert torch.count_nonzero(w.grad[mask]) > 0
        optimizer.step()
        pruner.after_step()
        for w, mask in zip(weights, masks):
            assert torch.count_nonzero(w[~mask]) == 0
    pruner.finalize(model)
    x, y = batch(model)
    nn.functional.cross_entropy(model(x), y).backward()  # hooks are gone: gradients flow again
    assert torch.count_nonzero(weights[0].grad[~masks[0]]) > 0


def test_momentum_moves_masked_weights_without_after_step():
    """Why ``after_step`` re-applies the masks: zero gradients do not stop a momentum step."""
    model = small_mlp()
    weights = prunable_weights(model)
    optimizer = OPTIMIZERS["momentum"](model.parameters())
    pruner = MagnitudePruner(ConstantSchedule(1.0))
    pruner.attach(model, weights)
    train_steps(model, optimizer, pruner, steps=3)
    pruner.prune_to(0.3)
    x, y = batch(model)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    assert torch.count_nonzero(weights[0][~pruner.masks[0]]) > 0
    pruner.after_step()
    assert torch.count_nonzero(weights[0][~pruner.masks[0]]) == 0


def test_threshold_pruner_zeroes_small_weights_after_training_then_fine_tunes():
    model = small_mlp()
    weights = prunable_weights(model)
    pruner = ThresholdPruner(threshold=0.15, finetune_epochs=2)
    pruner.attach(model, weights)
    total = pruner.total_epochs(3)
    assert total == 5 and pruner.frozen_from(total) == 3
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for epoch in range(total):
        before = [w.detach().clone() for w in weights]
        pruner.on_epoch_start(epoch, total)
        if epoch < 3:
            assert all(torch.equal(a, w) for a, w in zip(before, weights))
        if epoch == 3:
            for a, w in zip(before, weights):
                small = a.abs() < 0.15
                assert small.any() and torch.count_nonzero(w[small]) == 0
                assert torch.equal(w[~small], a[~small])
        train_steps(model, optimizer, pruner, steps=2, seed=epoch)
    masks = pruner.masks
    pruner.finalize(model)
    assert all(torch.count_nonzero(w[~m]) == 0 for w, m in zip(weights, masks))


def test_threshold_without_fine_tuning_prunes_in_finalize():
    model = small_mlp()
    weights = prunable_weights(model)
    pruner = ThresholdPruner(threshold=0.15, finetune_epochs=0)
    pruner.attach(model, weights)
    assert pruner.total_epochs(3) == 3 and pruner.frozen_from(3) == 0
    for epoch in range(3):
        pruner.on_epoch_start(epoch, 3)
    assert density_of(weights) == 1.0
    pruner.finalize(model)
    assert all(bool((w[w != 0].abs() >= 0.15).all()) for w in weights)
    assert density_of(weights) < 1.0


MODELS = {
    "mlp": lambda: small_mlp(),
    "mlp-bn-dropout": lambda: small_mlp(batch_norm=True, dropout=0.2),
    "cnn": lambda: small_cnn(),
    "cnn-bn": lambda: small_cnn(batch_norm=True, dropout=0.1),
}


@pytest.mark.parametrize("kind", list(MODELS))
def test_structured_returns_a_smaller_network_with_the_masked_networks_outputs(kind):
    model = MODELS[kind]()
    n_params = sum(p.numel() for p in model.parameters())
    pruner = StructuredPruner(CubicSchedule(final_density=0.5, end=0.5), finetune_epochs=1)
    pruner.attach(model, prunable_weights(model))
    total = pruner.total_epochs(3)
    assert total == 4 and pruner.frozen_from(total) == 1
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    kept = []
    for epoch in range(total):
        pruner.on_epoch_start(epoch, total)
        kept.append([int(k.sum()) for k in pruner.unit_masks])
        train_steps(model, optimizer, pruner, steps=3, seed=epoch)  # batch norm statistics move too
    assert kept[0] == [] and kept[1] == kept[2] == kept[3]  # pruned during training, then fixed
    model.eval()
    x, _ = batch(model, n=50, seed=7)
    with torch.no_grad():
        masked = model(x)
    smaller = pruner.finalize(model)
    smaller.eval()
    with torch.no_grad():
        torch.testing.assert_close(smaller(x), masked, atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in smaller.parameters()) < 0.5 * n_params
    widths = [hidden.layer for hidden in hidden_layers(model)]
    for index in widths:
        before, after = model[index], smaller[index]
        units = before.out_features if isinstance(before, nn.Linear) else before.out_channels
        width = after.out_features if isinstance(after, nn.Linear) else after.out_channels
        assert width == n_keep(units, 0.5)
    assert density_of(prunable_weights(smaller)) > 0.9  # dense: the zero units are gone
    assert getattr(smaller, "arch", None) == getattr(model, "arch", None)
    pickle.loads(pickle.dumps(smaller))


def test_structured_prunes_gradually_and_units_only_shrink():
    model = small_mlp()
    pruner = StructuredPruner(CubicSchedule(final_density=0.25, end=1.0), finetune_epochs=2)
    pruner.attach(model, prunable_weights(model))
    total = pruner.total_epochs(5)
    history = []
    for epoch in range(total):
        pruner.on_epoch_start(epoch, total)
        history.append([k.clone() for k in pruner.unit_masks])
    counts = [[int(k.sum()) for k in keep] for keep in history]
    assert counts[0] == [] and counts[-1] == [n_keep(10, 0.25), n_keep(8, 0.25)] == counts[4]
    assert counts[1][0] > counts[3][0]
    for before, after in zip(history[1:], history[2:]):
        assert all(not (a & ~b).any() for a, b in zip(after, before))
    pruner.finalize(model)


def test_structured_cnn_slices_channels_through_the_flatten():
    model = small_cnn()
    pruner = StructuredPruner(ConstantSchedule(0.5), finetune_epochs=0)
    pruner.attach(model, prunable_weights(model))
    smaller = pruner.finalize(model)
    shapes = [tuple(w.shape) for w in prunable_weights(smaller)]
    assert shapes == [(3, 1, 5, 5), (8, 3, 5, 5), (60, 8 * 4 * 4), (42, 60), (4, 42)]


def test_structured_leaves_a_linear_model_and_rejects_unknown_layouts():
    linear = build_model("linear", 5, 2)
    pruner = StructuredPruner(ConstantSchedule(0.5), finetune_epochs=0)
    pruner.attach(linear, prunable_weights(linear))
    assert pruner.finalize(linear) is linear
    odd = nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2))
    with pytest.raises(SparsetrainError, match="structured"):
        StructuredPruner(ConstantSchedule(0.5)).attach(odd, prunable_weights(odd))
    with pytest.raises(SparsetrainError, match="structured"):
        StructuredPruner(ConstantSchedule(0.5)).attach(nn.Linear(3, 2), prunable_weights(nn.Linear(3, 2)))


@pytest.mark.parametrize(
    "pruner",
    [
        NoPruning(),
        ThresholdPruner(threshold=0.1, finetune_epochs=1),
        MagnitudePruner(CubicSchedule(final_density=0.2), scope="global"),
        StructuredPruner(CubicSchedule(final_density=0.5), finetune_epochs=1),
    ],
    ids=["none", "threshold", "gmp", "structured"],
)
def test_pickling_round_trips_before_during_and_after_training(pruner):
    assert pickle.loads(pickle.dumps(pruner)) == pruner
    model = small_mlp()
    pruner.attach(model, prunable_weights(model))
    total = pruner.total_epochs(2)
    for epoch in range(total):
        pruner.on_epoch_start(epoch, total)
        during = pickle.loads(pickle.dumps(pruner))
        assert during == pruner
    pruner.finalize(model)
    after = pickle.loads(pickle.dumps(pruner))
    assert after == pruner
    if hasattr(pruner, "masks"):
        assert all(torch.equal(a, b) for a, b in zip(after.masks, pruner.masks))


# --- fits on digits ----------------------------------------------------------------------------

def digits():
    return standardized_digits(seed=42)


def train(kind, pruning, penalty="none", strength=1e-3, epochs=8, seed=0, **options):
    """Fit on digits with ``make_pruner(pruning, **options)`` and ``make_penalty(penalty, strength)``."""
    X_tr, y_tr, X_va, y_va, X_te, y_te = digits()
    torch.manual_seed(seed)
    model = build_model(kind, 64, 10, hidden=(64,), image_shape=(1, 8, 8))
    penalty = make_penalty(penalty, strength)
    pruner = make_pruner(pruning, **options)
    settings = TrainSettings(epochs=epochs, early_stopping=5, seed=seed)
    model, history = fit(model, X_tr, y_tr, X_va, y_va, task="classification", settings=settings,
                         penalty=penalty, pruner=pruner)
    with torch.no_grad():
        accuracy = float((model(torch.as_tensor(X_te)).argmax(1).numpy() == y_te).mean())
    return model, pruner, density_of(prunable_weights(model)), accuracy


def test_fit_gmp_mlp_hits_the_target_density():
    model, _, density, _ = train("mlp", "gmp", target_density=0.1, scope="layer")
    assert abs(density - 0.1) < 0.01
    for w in prunable_weights(model):
        assert abs(int(torch.count_nonzero(w)) - 0.1 * w.numel()) <= 1


def test_fit_global_gmp_hits_the_target_over_all_layers():
    model, _, _, accuracy = train("mlp", "gmp", penalty="l1", target_density=0.1, scope="global")
    weights = prunable_weights(model)
    total = sum(w.numel() for w in weights)
    assert abs(sum(int(torch.count_nonzero(w)) for w in weights) - 0.1 * total) <= 1
    assert accuracy > 0.85


def test_fit_gmp_cnn_hits_the_target_density_and_stays_accurate():
    _, _, density, accuracy = train("cnn", "gmp", target_density=0.2)
    assert abs(density - 0.2) < 0.02
    assert accuracy >= 0.85


def test_fit_gmp_combines_with_l0():
    model, _, density, _ = train("mlp", "gmp", penalty="l0", strength=1e-3, target_density=0.2)
    assert density <= 0.2 + 1e-3
    assert not any(type(m).__name__ == "HardConcreteGate" for m in model.modules())


def test_fit_threshold_after_l1_zeroes_weights():
    model, pruner, density, accuracy = train(
        "mlp", "threshold", penalty="l1", strength=1e-4, threshold=0.02, finetune_epochs=3
    )
    assert density < 0.95
    assert all(torch.count_nonzero(w[~m]) == 0 for w, m in zip(prunable_weights(model), pruner.masks))
    assert accuracy >= 0.85


def test_fit_structured_returns_a_smaller_network():
    model, _, _, accuracy = train("mlp", "structured", target_density=0.25)
    assert [tuple(w.shape) for w in prunable_weights(model)] == [(16, 64), (10, 16)]
    assert accuracy >= 0.85
