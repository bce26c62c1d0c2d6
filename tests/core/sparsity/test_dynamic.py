"""SET and RigL: constant per-layer density, drop / regrow invariants, optimizer-state reset,
ERK allocation, determinism, and one recipe run on digits per method."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from digits_data import standardized_digits
from torch import nn

from sparsetrain.config.sections import ModelConfig, SparsityConfig, TrainingConfig
from sparsetrain.core.data import load_digits_dataset
from sparsetrain.core.models import build_model, prunable_weights
from sparsetrain.core.sparsity.dynamic import DynamicPruner, RigLPruner, SETPruner
from sparsetrain.core.sparsity.masks import layer_densities, n_keep
from sparsetrain.core.sparsity.pruner import StepPruner, make_pruner
from sparsetrain.errors import SparsetrainError

DYNAMIC = {"set": SETPruner, "rigl": RigLPruner}
OPTIMIZERS = {
    "momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=0.05),
}


def small_mlp(seed=0) -> nn.Sequential:
    torch.manual_seed(seed)
    return build_model("mlp", 12, 3, hidden=(10, 8))


def batch(n=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def expected_counts(weights, pruner: DynamicPruner) -> list[int]:
    densities = layer_densities([w.shape for w in weights], pruner.density, pruner.layer_density,
                                pruner.min_layer_density)
    return [n_keep(w.numel(), d) for w, d in zip(weights, densities)]


def run(method, optimizer="adam", steps=24, seed=0, **options):
    """A hand loop as the trainer runs it; yields after every step (model, pruner, optimizer,
    masks before the step, dense gradients of the step)."""
    model = small_mlp(seed)
    weights = prunable_weights(model)
    dense: dict[int, torch.Tensor] = {}
    for i, w in enumerate(weights):  # registered before the pruner's hook: sees the dense gradient
        w.register_hook(lambda g, i=i: dense.__setitem__(i, g.detach().abs().clone()))
    pruner = make_pruner(method, **{"target_density": 0.3, "update_every": 2, **options})
    torch.manual_seed(seed)
    pruner.attach(model, weights)
    opt = OPTIMIZERS[optimizer](model.parameters())
    pruner.bind_optimizer(opt, steps)
    for step in range(steps):
        before = [m.clone() for m in pruner.masks]
        x, y = batch(seed=step)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for w, m in zip(weights, pruner.masks):
            assert torch.count_nonzero(w.grad[~m]) == 0  # no gradient reaches a masked weight
        opt.step()
        pruner.after_step()
        yield model, pruner, opt, before, dict(dense), step + 1


def test_make_pruner_builds_set_and_rigl_with_their_keys():
    for name, kind in DYNAMIC.items():
        pruner = make_pruner(name, target_density=0.05, update_every=7, layer_density="erk",
                             min_layer_density=0.01, prune_end=0.5)
        assert pruner == kind(density=0.05, update_every=7, layer_density="erk", min_layer_density=0.01,
                              end=0.5)
        assert isinstance(pruner, StepPruner)
    assert not isinstance(make_pruner("gmp"), StepPruner)


def test_invalid_dynamic_settings_fail_with_the_key():
    with pytest.raises(SparsetrainError, match="sparsity.update_every"):
        SETPruner(update_every=0)
    with pytest.raises(SparsetrainError, match="sparsity.target_density"):
        RigLPruner(density=0.0)
    with pytest.raises(SparsetrainError, match="sparsity.layer_density"):
        SETPruner(layer_density="random")  # type: ignore[arg-type]
    with pytest.raises(SparsetrainError, match="sparsity.min_layer_density"):
        SETPruner(density=0.1, min_layer_density=0.2)


def test_uniform_densities_are_the_target():
    assert layer_densities([(300, 784), (100, 300), (10, 100)], 0.02) == [0.02, 0.02, 0.02]


def test_erk_keeps_the_global_density_caps_at_one_and_honours_the_floor():
    shapes = [(300, 784), (100, 300), (10, 100)]
    sizes = [math.prod(s) for s in shapes]
    for density, floor in [(0.02, 0.0), (0.3, 0.0), (0.02, 0.018)]:
        d = layer_densities(shapes, density, "erk", floor)
        assert sum(di * n for di, n in zip(d, sizes)) == pytest.approx(density * sum(sizes))
        assert all(floor - 1e-12 <= di <= 1.0 for di in d)
        assert d[0] < d[1] < d[2]  # the smaller the layer, the denser
    assert layer_densities(shapes, 0.3, "erk")[2] == 1.0  # the output layer capped dense
    assert layer_densities(shapes, 0.02, "erk", 0.018)[0] == 0.018


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("method", list(DYNAMIC))
def test_density_is_exact_and_updates_keep_the_invariants(method, optimizer):
    updates = 0
    for model, pruner, opt, before, _, step in run(method, optimizer):
        weights = prunable_weights(model)
        assert [m.shape for m in pruner.masks] == [w.shape for w in weights]
        assert [int(m.sum()) for m in pruner.masks] == expected_counts(weights, pruner)
        for w, m in zip(weights, pruner.masks):
            assert torch.count_nonzero(w[~m]) == 0  # masked weights are exactly zero
        if step % 2 or step >= 0.75 * 24:
            assert all(torch.equal(a, b) for a, b in zip(before, pruner.masks))  # no update
            continue
        updates += 1
        for w, m, old, (dropped, grown) in zip(weights, pruner.masks, before, pruner.last_update):
            assert int(dropped.sum()) == int(grown.sum())
            assert bool((dropped <= old).all())  # drops among the active
            assert not bool((grown & old).any())  # regrowth among the inactive
            assert torch.equal(m, (old & ~dropped) | grown)
            assert torch.count_nonzero(w[grown]) == 0  # regrown weights start at exactly zero
            for value in opt.state[w].values():
                if torch.is_tensor(value) and value.shape == w.shape:
                    assert torch.count_nonzero(value[dropped | grown]) == 0  # state reset
        if step <= 8:  # early updates drop a sizeable fraction: the mask did move
            assert any(int(d.sum()) for d, _ in pruner.last_update)
    assert updates == 8  # steps 2, 4, ..., 16 (< 75% of 24)


def test_rigl_regrows_where_the_dense_gradient_is_largest():
    for model, pruner, _, before, dense, step in run("rigl"):
        if step % 2 or step >= 18:
            continue
        for i, (old, (_, grown)) in enumerate(zip(before, pruner.last_update)):
            if not grown.any():
                continue
            candidates = ~old
            assert float(dense[i][grown].min()) >= float(dense[i][candidates & ~grown].max())


def test_drop_fraction_decays_on_a_cosine_to_zero_at_the_end():
    pruner = SETPruner(end=0.75)
    pruner._total_steps = 100
    assert pruner.drop_fraction_at(0) == pytest.approx(0.3)
    assert pruner.drop_fraction_at(37.5) == pytest.approx(0.15)
    assert pruner.drop_fraction_at(75) == pytest.approx(0.0)
    assert [pruner._is_update(s) for s in (100, 75, 74)] == [False, False, False]
    assert SETPruner(update_every=1, end=0.75).frozen_from(8) == 6


@pytest.mark.parametrize("method", list(DYNAMIC))
def test_same_seed_same_masks(method):
    def final_masks(seed):
        *_, (_, pruner, *_) = run(method, seed=seed)
        return [m.clone() for m in pruner.masks]

    a, b, c = final_masks(0), final_masks(0), final_masks(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("method", list(DYNAMIC))
def test_pickles_before_and_after_training(method):
    pruner = make_pruner(method, target_density=0.3)
    assert pickle.loads(pickle.dumps(pruner)) == pruner
    model = small_mlp()
    pruner.attach(model, prunable_weights(model))
    pruner.finalize(model)
    after = pickle.loads(pickle.dumps(pruner))
    assert after == pruner and all(torch.equal(a, b) for a, b in zip(after.masks, pruner.masks))


@pytest.fixture(scope="module")
def digits():
    from sparsetrain.core.data import DatasetInfo, Splits

    return Splits(*standardized_digits(seed=42)), DatasetInfo.of(load_digits_dataset())


@pytest.mark.parametrize("method", list(DYNAMIC))
def test_train_network_on_digits_at_constant_density(digits, method):
    from sparsetrain.recipe import train_network

    splits, info = digits
    sparsity = SparsityConfig(penalty="none", pruning=method, target_density=0.2, update_every=10)
    network, history = train_network(splits, info, ModelConfig(kind="mlp", hidden=(64,)), sparsity,
                                     TrainingConfig(epochs=8, verbose=False))
    weights = prunable_weights(network)
    total = sum(w.numel() for w in weights)
    assert sum(int(torch.count_nonzero(w)) for w in weights) <= round(0.2 * 64 * 64) + round(0.2 * 64 * 10)
    assert sum(int(torch.count_nonzero(w)) for w in weights) / total > 0.18  # regrown weights trained
    with torch.no_grad():
        accuracy = float((network(torch.as_tensor(splits.X_test)).argmax(1).numpy() == splits.y_test).mean())
    assert accuracy > 0.85


# --- the per-layer floor for gmp and threshold ------------------------------------------------


def _layer_counts(weights, masks):
    return [int(m.sum()) for m in masks], [w.numel() for w in weights]


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_gmp_keeps_every_layer_at_or_above_the_floor(scope):
    def lopsided():
        model = small_mlp()
        with torch.no_grad():
            prunable_weights(model)[1].mul_(1e-3)  # global magnitude would cut this layer to nothing
        return model, prunable_weights(model)

    model, weights = lopsided()
    pruner = make_pruner("gmp", target_density=0.1, scope=scope, min_layer_density=0.05)
    pruner.attach(model, weights)
    pruner.prune_to(0.1)
    kept, sizes = _layer_counts(weights, pruner.masks)
    assert all(k >= n_keep(n, 0.05) for k, n in zip(kept, sizes))
    if scope == "global":
        assert sum(kept) == n_keep(sum(sizes), 0.1)
    unfloored = make_pruner("gmp", target_density=0.1, scope="global")
    model, weights = lopsided()
    unfloored.attach(model, weights)
    unfloored.prune_to(0.1)
    assert int(unfloored.masks[1].sum()) < n_keep(sizes[1], 0.05)


def test_threshold_keeps_the_floor_of_each_layer():
    model = small_mlp()
    weights = prunable_weights(model)
    pruner = make_pruner("threshold", threshold=10.0, min_layer_density=0.1)  # the threshold alone keeps none
    pruner.attach(model, weights)
    pruner.prune()
    kept, sizes = _layer_counts(weights, pruner.masks)
    assert kept == [n_keep(n, 0.1) for n in sizes]
    with pytest.raises(SparsetrainError, match="sparsity.min_layer_density"):
        make_pruner("gmp", target_density=0.1, min_layer_density=0.2)
