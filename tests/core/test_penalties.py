"""Contract tests over every penalty, plus group-lasso and L0 specifics and fits on digits."""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest
import torch
from digits_data import standardized_digits
from scipy.optimize import minimize
from torch import nn
from torch.nn.utils import parametrize

from sparsetrain.core.models import build_model, prunable_weights
from sparsetrain.core.penalties import (
    PENALTIES,
    ElasticNet,
    GroupLasso,
    HardConcreteGate,
    L0HardConcrete,
    L1,
    L2,
    NoPenalty,
    Penalty,
    make_penalty,
)
from sparsetrain.core.sparsity.masks import density_of
from sparsetrain.core.training import TrainSettings, fit
from sparsetrain.errors import SparsetrainError

ALL = [
    NoPenalty(0.3),
    L1(0.3),
    L2(0.3),
    ElasticNet(0.3, l1_ratio=0.7),
    GroupLasso(0.3, groups="input"),
    GroupLasso(0.3, groups="neuron"),
    L0HardConcrete(0.3),
]
IDS = [f"{p.name}-{getattr(p, 'groups', '')}".rstrip("-") for p in ALL]
PROXIMAL = [p for p in ALL if p.exact_prox]
PROXIMAL_IDS = [i for p, i in zip(ALL, IDS) if p.exact_prox]
SHAPES = [(4, 3), (3, 2, 2, 2)]  # a linear layer's matrix and a convolution kernel


def random_weight(shape, seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_registry_builds_every_penalty_by_its_name():
    assert set(PENALTIES.values()) == {type(p) for p in ALL}
    for name in PENALTIES:
        penalty = make_penalty(name, 0.1, l1_ratio=0.5, groups="neuron")
        assert isinstance(penalty, Penalty)
        assert penalty.name == name
    assert make_penalty("group_lasso", 0.1, l1_ratio=0.2, groups="neuron") == GroupLasso(0.1, "neuron")
    assert make_penalty("elasticnet", 0.1, l1_ratio=0.2, groups="neuron") == ElasticNet(0.1, 0.2)


def test_unknown_and_invalid_penalties_fail_with_the_key():
    with pytest.raises(SparsetrainError, match="sparsity.penalty"):
        make_penalty("l3", 0.1)
    with pytest.raises(SparsetrainError, match="sparsity.groups"):
        GroupLasso(0.1, groups="rows")  # type: ignore[arg-type]
    with pytest.raises(SparsetrainError, match="sparsity.strength"):
        L0HardConcrete(-1.0)


@pytest.mark.parametrize("penalty", ALL, ids=IDS)
def test_pickle_round_trip(penalty):
    copy = pickle.loads(pickle.dumps(penalty))
    assert copy == penalty and type(copy) is type(penalty)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("penalty", PROXIMAL, ids=PROXIMAL_IDS)
def test_prox_is_the_minimiser_of_the_prox_objective(penalty, shape):
    w = random_weight(shape)
    step = 0.7

    def objective(z: torch.Tensor) -> float:
        return float(0.5 * ((z - w) ** 2).sum() + step * penalty.value(z))

    z = penalty.prox(w, step)
    best = objective(z)
    gen = torch.Generator().manual_seed(1)
    for scale in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
        for _ in range(50):
            noise = torch.randn(shape, generator=gen, dtype=torch.float64)
            assert best <= objective(z + scale * noise) + 1e-12
            # perturb only the entries the prox set to zero: zero must stay optimal there
            moved = z + (z == 0) * scale * torch.randn(shape, generator=gen, dtype=torch.float64)
            assert best <= objective(moved) + 1e-12
    # a derivative-free solver started anywhere finds nothing better
    for start in (w, torch.zeros_like(w)):
        result = minimize(
            lambda x: objective(torch.as_tensor(x).view(shape)), start.flatten().numpy(), method="Powell",
            options={"xtol": 1e-10, "ftol": 1e-12, "maxfev": 40000},
        )
        assert best <= result.fun + 1e-9


@pytest.mark.parametrize("penalty", ALL, ids=IDS)
def test_tensor_step_equal_to_a_constant_matches_the_float_step(penalty):
    w = random_weight((5, 4))
    torch.testing.assert_close(penalty.prox(w, torch.full_like(w, 0.4)), penalty.prox(w, 0.4))


def test_l1_tensor_step_is_coordinatewise_soft_thresholding():
    w = random_weight((5, 4))
    step = torch.rand(5, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = torch.sign(w) * torch.clamp(w.abs() - 0.3 * step, min=0)
    torch.testing.assert_close(L1(0.3).prox(w, step), expected)


@pytest.mark.parametrize("groups", ["input", "neuron"])
def test_group_lasso_tensor_step_shrinks_each_group_as_a_block_with_its_smallest_step(groups):
    penalty = GroupLasso(0.5, groups)
    w = random_weight((6, 5))
    step = torch.rand(6, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64) + 0.1
    z = penalty.prox(w, step)
    axis = 1 if groups == "input" else 0
    for g in range(w.shape[axis]):
        wg, zg, sg = (t.select(axis, g) for t in (w, z, step))
        torch.testing.assert_close(zg, penalty.prox(wg.unsqueeze(axis), float(sg.min())).squeeze(axis))
        ratio = zg / wg
        torch.testing.assert_close(ratio, ratio[0].expand_as(ratio))  # one scale per group


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("penalty", ALL, ids=IDS)
def test_support_equals_the_nonzero_pattern(penalty, shape):
    w = random_weight(shape)
    z = penalty.prox(w, 0.9)
    if not penalty.exact_prox:  # L0's prox is the identity: put exact zeros in by hand
        z = torch.where(w.abs() < 0.5, torch.zeros_like(w), w)
    assert torch.equal(penalty.support(z), z != 0)


@pytest.mark.parametrize("penalty", ALL, ids=IDS)
def test_separable_says_whether_value_and_prox_act_entry_by_entry(penalty):
    """The claim solvers rely on for working sets: the penalty of a matrix is that of its entries."""
    w = random_weight((3, 4))
    entries = [w[i : i + 1, j : j + 1] for i in range(3) for j in range(4)]
    prox_of_entries = torch.cat([penalty.prox(e, 0.7).flatten() for e in entries]).view(3, 4)
    value_of_entries = sum(float(penalty.value(e)) for e in entries)
    by_entry = torch.allclose(penalty.prox(w, 0.7), prox_of_entries) and math.isclose(
        float(penalty.value(w)), value_of_entries, rel_tol=1e-12
    )
    assert by_entry == penalty.separable


def linear_problem(seed=0):
    """Multinomial logistic regression without intercept: data and the gradient function."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(80, 6, generator=gen, dtype=torch.float64)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long() + (X[:, 2] > 0.5).long()

    onehot = nn.functional.one_hot(y, 3).double()

    def grad(W: torch.Tensor) -> torch.Tensor:  # of the mean cross-entropy
        return (torch.softmax(X @ W.T, dim=1) - onehot).T @ X / len(X)

    return grad, torch.zeros(3, 6, dtype=torch.float64)


def ista(penalty: Penalty, grad, W: torch.Tensor, steps: int, step: float = 0.5) -> torch.Tensor:
    for _ in range(steps):
        W = penalty.prox(W - step * grad(W), step)
    return W


@pytest.mark.parametrize("penalty", ALL, ids=IDS)
def test_strength_max_is_where_every_weight_is_zero(penalty):
    grad, W0 = linear_problem()
    grad0 = grad(W0)
    lam = penalty.strength_max(grad0)
    if not np.isfinite(lam):
        assert penalty.name in ("none", "l2", "l0")  # no strength zeroes them all
        return
    above = dataclasses.replace(penalty, strength=lam * 1.01)
    assert torch.count_nonzero(ista(above, grad, W0, 30)) == 0
    below = dataclasses.replace(penalty, strength=lam * 0.98)
    assert torch.count_nonzero(ista(below, grad, W0, 1)) > 0
    assert torch.count_nonzero(ista(below, grad, W0, 30)) > 0


def test_l2_strength_max_is_zero_only_without_gradient():
    assert L2(1.0).strength_max(torch.zeros(3, 4)) == 0.0
    assert L2(1.0).strength_max(torch.ones(3, 4)) == float("inf")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("groups", ["input", "neuron"])
def test_group_lasso_zeroes_whole_groups(groups, shape):
    w = random_weight(shape, seed=5)
    axis = 1 if groups == "input" else 0
    size = w.numel() // w.shape[axis]
    group_norms = w.transpose(0, axis).reshape(w.shape[axis], -1).norm(dim=1)
    penalty = GroupLasso(float(group_norms.median()) / np.sqrt(size), groups)  # about half survive
    z = penalty.prox(w, 1.0)
    norms = z.transpose(0, axis).reshape(z.shape[axis], -1)
    zero_groups = (norms == 0).all(dim=1)
    assert zero_groups.any() and not zero_groups.all()
    assert ((norms != 0).all(dim=1) | zero_groups).all()  # each group all zero or all nonzero


def test_group_lasso_value_weights_groups_by_sqrt_size():
    w = torch.tensor([[3.0, 0.0], [4.0, 1.0]])  # columns: norms 5 and 1, two rows each
    assert float(GroupLasso(0.1, "input").value(w)) == pytest.approx(0.1 * np.sqrt(2) * 6)
    rows = float(GroupLasso(0.1, "neuron").value(w))
    assert rows == pytest.approx(0.1 * np.sqrt(2) * (3.0 + np.sqrt(17.0)))


def test_targets():
    assert L1(0.1).targets(3) == [0, 1, 2]
    assert GroupLasso(0.1, "input").targets(3) == [0]
    assert GroupLasso(0.1, "neuron").targets(3) == [0, 1]
    assert GroupLasso(0.1, "neuron").targets(1) == []  # a linear model has no hidden unit


def mlp_with_l0(strength=0.1, seed=0):
    torch.manual_seed(seed)
    model = build_model("mlp", 8, 3, hidden=(6,))
    penalty = L0HardConcrete(strength)
    weights = prunable_weights(model)
    n_before = len(list(model.parameters()))
    penalty.attach(model, weights)
    return model, penalty, weights, n_before


def test_l0_attach_adds_gate_parameters_before_the_optimizer_exists():
    model, penalty, weights, n_before = mlp_with_l0()
    gates = [m for m in model.modules() if isinstance(m, HardConcreteGate)]
    assert len(gates) == len(weights)
    params = list(model.parameters())
    assert len(params) == n_before + len(gates)
    assert all(any(g.theta is p for p in params) for g in gates)
    assert all(any(w is p for p in params) for w in weights)  # the trained weights are unchanged objects


def test_l0_regularization_is_strength_times_expected_l0_and_trains_the_gates():
    model, penalty, weights, _ = mlp_with_l0(strength=0.1)
    reg = penalty.regularization(model)
    n = sum(w.numel() for w in weights)
    assert 0 < float(reg.detach()) < 0.1 * n
    gates = [g for g in model.modules() if isinstance(g, HardConcreteGate)]
    expected = sum(float(g.p_nonzero().sum().detach()) for g in gates)
    assert float(reg.detach()) == pytest.approx(0.1 * expected)
    model.train()
    loss = model(torch.randn(16, 8)).pow(2).mean() + reg
    loss.backward()
    assert all(g.theta.grad is not None and g.theta.grad.abs().sum() > 0
               for g in model.modules() if isinstance(g, HardConcreteGate))
    assert penalty.regularization(nn.Linear(2, 2)) == 0.0


def test_l0_finalize_bakes_the_deterministic_gates_into_exact_zeros():
    model, penalty, weights, n_before = mlp_with_l0()
    with torch.no_grad():  # close about half of the gates
        for gate in (m for m in model.modules() if isinstance(m, HardConcreteGate)):
            gate.theta.copy_(torch.randn(gate.theta.shape) * 6 / gate.scale)
    model.eval()
    x = torch.randn(10, 8)
    gated = model(x)
    assert torch.equal(model(x), gated)  # evaluation gates are deterministic
    penalty.finalize(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert not any(isinstance(m, HardConcreteGate) for m in model.modules())
    assert len(list(model.parameters())) == n_before
    assert all(a is b for a, b in zip(prunable_weights(model), weights))
    torch.testing.assert_close(model(x), gated)
    assert 0.2 < density_of(prunable_weights(model)) < 0.8
    pickle.loads(pickle.dumps(model))


def test_l0_prox_is_the_identity_and_has_no_strength_max():
    w = random_weight((3, 3))
    assert torch.equal(L0HardConcrete(1.0).prox(w, 0.5), w)
    assert L0HardConcrete(1.0).strength_max(w) == float("inf")
    assert float(L0HardConcrete(0.5).value(torch.tensor([0.0, 2.0, -1.0]))) == pytest.approx(1.0)


# --- fits on digits ----------------------------------------------------------------------------

def digits():
    return standardized_digits(seed=42)


def train(kind, penalty, epochs=8, hidden=(64,), seed=0):
    X_tr, y_tr, X_va, y_va, X_te, y_te = digits()
    torch.manual_seed(seed)
    model = build_model(kind, X_tr.shape[1], 10, hidden=hidden)
    settings = TrainSettings(epochs=epochs, early_stopping=5, seed=seed)
    model, _ = fit(model, X_tr, y_tr, X_va, y_va, task="classification", settings=settings, penalty=penalty)
    with torch.no_grad():
        accuracy = float((model(torch.as_tensor(X_te)).argmax(1).numpy() == y_te).mean())
    return model, density_of(prunable_weights(model)), accuracy


def test_fit_l0_density_falls_as_strength_rises():
    densities = []
    for strength in (1e-4, 1e-3, 1e-2):
        model, density, accuracy = train("mlp", make_penalty("l0", strength))
        densities.append(density)
        assert not any(isinstance(m, HardConcreteGate) for m in model.modules())
    assert densities[0] > densities[1] > densities[2]
    assert densities[2] < 0.9 and accuracy >= 0.85


def test_fit_group_lasso_input_selects_features_on_a_linear_model():
    model, density, accuracy = train("linear", make_penalty("group_lasso", 3e-2, groups="input"), epochs=30)
    w = prunable_weights(model)[0]
    zero_columns = (w == 0).all(dim=0)
    assert 0 < int(zero_columns.sum()) < w.shape[1]
    assert torch.equal(w == 0, zero_columns.expand_as(w))  # zeros only as whole columns
    assert accuracy >= 0.85


def test_fit_group_lasso_neuron_zeroes_whole_rows():
    model, _, _ = train("mlp", make_penalty("group_lasso", 5e-2, groups="neuron"))
    w = prunable_weights(model)[0]
    zero_rows = (w == 0).all(dim=1)
    assert zero_rows.any()
    # Outside the zeroed units, zeros only sit on constant input pixels (no gradient ever
    # reaches them), left behind when a zeroed unit came back to life.
    constant_inputs = torch.as_tensor(digits()[0].std(axis=0) == 0)
    stray = (w == 0) & ~zero_rows[:, None]
    assert not stray[:, ~constant_inputs].any()
    assert torch.count_nonzero(prunable_weights(model)[-1]) == prunable_weights(model)[-1].numel()


def test_fit_l1_is_sparser_than_l2():
    _, l1_density, _ = train("mlp", make_penalty("l1", 1e-3))
    _, l2_density, _ = train("mlp", make_penalty("l2", 1e-3))
    assert l1_density < l2_density - 0.05
