import numpy as np
import pytest
import torch

from sparsetrain.core.models import build_model, prunable_weights
from sparsetrain.core.penalties import L1, L2, NoPenalty
from sparsetrain.core.training import TrainSettings, fit, resolve_device, seed_everything
from sparsetrain.errors import SparsetrainError

FAST = TrainSettings(epochs=8, early_stopping=None)


def train(digits_splits, penalty, settings=FAST, kind="linear"):
    X_tr, y_tr, X_va, y_va, X_te, y_te = digits_splits
    seed_everything(settings.seed)
    model = build_model(kind, X_tr.shape[1], 10, hidden=(32,))
    model, history = fit(model, X_tr, y_tr, X_va, y_va, task="classification", settings=settings, penalty=penalty)
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(X_te)).argmax(1).numpy() == y_te).mean()
    return model, history, accuracy


def objective(model, X, y, penalty):
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(X)), torch.from_numpy(y))
        return float(loss + sum(penalty.value(w) for w in prunable_weights(model)))


def test_l1_prox_gives_exact_zeros(digits_splits):
    model, history, accuracy = train(digits_splits, L1(1e-2))
    w = prunable_weights(model)[0]
    assert int((w == 0).sum()) > 0.2 * w.numel(), "the prox step must leave exact zeros"
    assert history.density[-1] < 0.8
    assert accuracy > 0.88


def test_l2_shrinks_but_keeps_informative_weights_nonzero(digits_splits):
    model, history, _ = train(digits_splits, L2(1e-3))
    assert history.density[-1] > 0.85


def test_prox_training_lowers_the_l1_objective(digits_splits):
    X_tr, y_tr = digits_splits[0], digits_splits[1]
    penalty = L1(1e-2)
    seed_everything(0)
    start = build_model("linear", X_tr.shape[1], 10)
    before = objective(start, X_tr, y_tr, penalty)
    model, _, _ = train(digits_splits, penalty)
    assert objective(model, X_tr, y_tr, penalty) < 0.5 * before


def test_stronger_l1_is_sparser(digits_splits):
    densities = [train(digits_splits, L1(s))[1].density[-1] for s in (1e-3, 1e-2, 5e-2)]
    assert densities[0] > densities[1] > densities[2]


def test_training_is_deterministic_on_cpu(digits_splits):
    a, history_a, _ = train(digits_splits, L1(1e-3))
    b, history_b, _ = train(digits_splits, L1(1e-3))
    assert history_a.train_loss == history_b.train_loss
    for wa, wb in zip(a.parameters(), b.parameters()):
        assert torch.equal(wa, wb)


def test_cnn_trains_channels_last_on_cpu_and_comes_back_contiguous(digits_splits):
    """fit runs CPU convolutions in channels-last layout (faster in oneDNN) but returns the usual
    layout, deterministically: export and users see ordinary weights."""
    X_tr, y_tr, X_va, y_va, X_te, y_te = digits_splits
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("cnn", 64, 10, image_shape=(1, 8, 8))
        model, _ = fit(model, X_tr, y_tr, X_va, y_va, task="classification", settings=FAST, penalty=L1(1e-3))
        assert all(p.is_contiguous() for p in model.parameters())
        runs.append(model)
    for a, b in zip(runs[0].parameters(), runs[1].parameters()):
        assert torch.equal(a, b)
    with torch.inference_mode():
        accuracy = (runs[0](torch.as_tensor(X_te)).argmax(1).numpy() == y_te).mean()
    assert accuracy > 0.8


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam", "adamw"])
@pytest.mark.parametrize("batch_size", [64, None])
def test_every_optimizer_trains_with_the_prox(digits_splits, optimizer, batch_size):
    lr = 0.1 if optimizer in ("sgd", "momentum", "nesterov") else 1e-2
    epochs = 6 if batch_size else 60  # full batch: one step per epoch
    settings = TrainSettings(optimizer=optimizer, lr=lr, batch_size=batch_size, epochs=epochs)
    model, history, accuracy = train(digits_splits, L1(1e-3), settings)
    assert history.train_loss[-1] < history.train_loss[0]
    assert accuracy > 0.8


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine"])
def test_lr_schedules(digits_splits, schedule):
    settings = TrainSettings(lr_schedule=schedule, epochs=10, batch_size=64, early_stopping=None)
    _, history, accuracy = train(digits_splits, NoPenalty(), settings)
    assert history.epochs_run == 10 and accuracy > 0.85


def test_early_stopping_stops_and_restores_the_best_epoch(digits_splits):
    settings = TrainSettings(epochs=60, early_stopping=2, lr=0.05, lr_schedule="constant")
    _, history, _ = train(digits_splits, NoPenalty(), settings, kind="mlp")
    assert history.stopped_early
    assert history.epochs_run < 60
    assert history.best_epoch == int(np.argmin(history.val_loss))


def test_divergence_is_reported():
    from sparsetrain.core.training import DivergedError

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)).astype(np.float32) * 1e3
    y = (X @ np.ones(4)).astype(np.float32)
    model = build_model("linear", 4, 1)
    settings = TrainSettings(optimizer="sgd", lr=10.0, epochs=5)
    with pytest.raises(DivergedError, match="training.lr"):
        fit(model, X, y, None, None, task="regression", settings=settings)


def test_regression_fits_a_linear_target():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.0, 0.0, 3.0])).astype(np.float32)
    model = build_model("linear", 5, 1)
    settings = TrainSettings(epochs=300, lr=0.05, batch_size=None, lr_schedule="constant")
    model, history = fit(model, X, y, None, None, task="regression", settings=settings, penalty=L1(1e-2))
    w = prunable_weights(model)[0].detach().numpy().ravel()
    assert history.train_loss[-1] < 0.1
    assert np.allclose(w[[0, 1, 4]], [1, -2, 3], atol=0.15)


def test_progress_callback_sees_every_epoch(digits_splits):
    seen = []
    X_tr, y_tr, X_va, y_va, *_ = digits_splits
    model = build_model("linear", X_tr.shape[1], 10)
    fit(model, X_tr, y_tr, X_va, y_va, task="classification", settings=FAST, callbacks=[seen.append])
    assert [log.epoch for log in seen] == list(range(8))


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(SparsetrainError, match="training.device"):
            resolve_device("cuda")


@pytest.mark.parametrize("name", ["constant", "step", "cosine"])
def test_fine_tuning_restarts_the_schedule_at_a_tenth(name):
    from sparsetrain.core.training import lr_factor

    assert lr_factor(name, 0, 10, 15) == 1.0
    assert lr_factor(name, 10, 10, 15) == pytest.approx(0.1)
    assert lr_factor(name, 14, 10, 15) <= 0.1
    assert lr_factor(name, 9, 10, 15) <= 1.0


def test_unknown_schedule_is_named():
    from sparsetrain.core.training import lr_factor

    with pytest.raises(SparsetrainError, match="training.lr_schedule"):
        lr_factor("linear", 0, 10, 10)


def test_auto_batch_size_gives_small_data_enough_steps():
    from sparsetrain.core.training import resolve_batch_size

    assert resolve_batch_size("auto", 54_000) == 256
    assert resolve_batch_size("auto", 1_257) == 62  # digits: 20 steps an epoch
    assert resolve_batch_size("auto", 100) == 16
    assert resolve_batch_size(None, 500) == 500
    assert resolve_batch_size(32, 500) == 32
