"""``fit``: one training loop for every model, penalty and pruner.

The loop owns the device, batching, optimizer, LR schedule, the proximal step of the penalty,
the pruner's masks, early stopping and progress. Its only side effects are the callbacks it is
given (progress lines, metric logging), so it runs the same in tests, nodes and sweeps.

The proximal step follows the optimizer's own metric (ProxGen, Yun et al. 2021): after an Adam
step the prox of coordinate ``i`` uses step ``lr / (sqrt(v_i) + eps)``, the same per-coordinate step
the gradient just took; after SGD it uses ``lr``. This keeps L1 thresholds meaningful under Adam,
where a plain ``lr`` step would be orders of magnitude too small to ever reach zero.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from sparsetrain.core import distributed
from sparsetrain.core.distributed import Shard
from sparsetrain.core.models import prunable_weights
from sparsetrain.core.penalties import NoPenalty, Penalty
from sparsetrain.core.sparsity.masks import density_of
from sparsetrain.core.sparsity.pruner import NoPruning, Pruner, StepPruner
from sparsetrain.errors import SparsetrainError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """What the loop reads, as plain values: core takes no config objects, so that it runs the
    same from a test, a notebook or the recipe. The defaults are those of the ``training`` config
    section; names (optimizer, schedule, device) are checked where they are used."""

    optimizer: str = "adam"
    lr: float = 1.0e-2
    batch_size: int | str | None = "auto"  # None: full batch; "auto": see resolve_batch_size
    epochs: int = 30
    lr_schedule: str = "cosine"
    early_stopping: int | None = 5  # epochs without improvement; None: never stop early
    device: str = "auto"
    seed: int = 42
    amp: bool = False


@dataclass(frozen=True)
class EpochLog:
    """What a callback sees after each epoch."""

    epoch: int
    total_epochs: int
    train_loss: float
    val_loss: float | None
    density: float
    lr: float
    seconds: float


@dataclass
class History:
    """Per-epoch curves and the facts of one training run."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    density: list[float] = field(default_factory=list)
    best_epoch: int = 0
    epochs_run: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    device: str = "cpu"


Callback = Callable[[EpochLog], None]


class DivergedError(RuntimeError):
    """The loss became NaN or inf: the learning rate or strength is too large."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when there is one; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SparsetrainError(
            f"training.device '{name}' asked for CUDA but none is available; use 'auto' or 'cpu'"
        )
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so that CPU runs repeat bit for bit."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(name: str, params: Sequence[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Optimizers by config name (``training.optimizer``); none has built-in weight decay,
    since regularization belongs to the penalty."""
    factories: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "sgd": lambda: torch.optim.SGD(params, lr=lr),
        "momentum": lambda: torch.optim.SGD(params, lr=lr, momentum=0.9),
        "nesterov": lambda: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True),
        "adam": lambda: torch.optim.Adam(params, lr=lr),
        "adamw": lambda: torch.optim.AdamW(params, lr=lr, weight_decay=0.0),
    }
    if name not in factories:
        raise SparsetrainError(f"training.optimizer '{name}' is unknown; choose one of {', '.join(factories)}")
    return factories[name]()


FINETUNE_LR_FACTOR = 0.1


def lr_factor(name: str, epoch: int, train_epochs: int, total_epochs: int) -> float:
    """LR multiplier of an epoch: constant, step (x0.1 at 1/2 and 3/4 of training) or cosine to 0
    over the ``train_epochs``; epochs after them fine-tune a pruned network (threshold,
    structured) and restart the same shape from a tenth of the LR (Han et al. 2015 retrain with
    a lower rate), so that fine-tuning does not run at the near-zero tail of the first schedule."""
    if name not in ("constant", "step", "cosine"):
        raise SparsetrainError(f"training.lr_schedule '{name}' is unknown; choose constant, step or cosine")
    scale = 1.0
    if epoch >= train_epochs:
        epoch, train_epochs, scale = epoch - train_epochs, total_epochs - train_epochs, FINETUNE_LR_FACTOR
    if name == "step":
        milestones = {max(1, train_epochs // 2), max(1, (3 * train_epochs) // 4)}
        return scale * 0.1 ** sum(epoch >= m for m in milestones)
    if name == "cosine":
        return scale * 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, train_epochs)))
    return scale


def make_lr_schedule(name: str, optimizer: torch.optim.Optimizer, train_epochs: int, total_epochs: int):
    """A per-epoch scheduler over :func:`lr_factor`."""
    lr_factor(name, 0, train_epochs, total_epochs)  # fail on an unknown name before training
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: lr_factor(name, epoch, train_epochs, total_epochs)
    )


def prox_steps(optimizer: torch.optim.Optimizer, weights: Sequence[nn.Parameter]) -> list[Tensor | float]:
    """The step each weight just took: per coordinate for Adam-type optimizers, else the LR."""
    steps: list[Tensor | float] = []
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    for w in weights:
        group = group_of[id(w)]
        state = optimizer.state.get(w, {})
        if "exp_avg_sq" in state:
            beta2 = group["betas"][1]
            step = float(state["step"])
            v_hat = state["exp_avg_sq"] / (1.0 - beta2**step)
            steps.append(group["lr"] / (v_hat.sqrt() + group["eps"]))
        else:
            steps.append(group["lr"])
    return steps


AUTO_BATCH_SIZE, MIN_STEPS_PER_EPOCH = 256, 20


def resolve_batch_size(batch_size: int | str | None, n_rows: int) -> int:
    """``None`` is full batch; ``"auto"`` is 256, lowered on small data (down to 16) so that an
    epoch has at least 20 steps: digits then trains in a few epochs, Fashion-MNIST keeps 256."""
    if batch_size is None:
        return max(n_rows, 1)
    if batch_size == "auto":
        return max(16, min(AUTO_BATCH_SIZE, n_rows // MIN_STEPS_PER_EPOCH))
    return int(batch_size)


def smallest_batch(has_batch_norm: bool, world_size: int = 1) -> int:
    """The fewest rows a batch may have: batch norm cannot normalize one row, on any rank."""
    return 2 * world_size if has_batch_norm else 1


def steps_per_epoch(n_rows: int, batch_size: int, min_rows: int = 1) -> int:
    """Optimizer steps in one epoch: one per batch, less a last batch under ``min_rows``."""
    steps = math.ceil(n_rows / batch_size)
    last = n_rows % batch_size
    return steps - int(0 < last < min_rows)


def loss_function(task: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Mean cross-entropy for classification, mean squared error for regression."""
    if task == "classification":
        return nn.functional.cross_entropy
    if task == "regression":
        return lambda output, target: nn.functional.mse_loss(output.squeeze(-1), target)
    raise SparsetrainError(f"data.task '{task}' is unknown; choose classification or regression")


def as_tensors(X: np.ndarray, y: np.ndarray, task: str, device: torch.device) -> tuple[Tensor, Tensor]:
    """Move one split to the device once, so that batches are slices, not host copies."""
    X_t = torch.as_tensor(np.ascontiguousarray(X), dtype=torch.float32, device=device)
    y_dtype = torch.long if task == "classification" else torch.float32
    return X_t, torch.as_tensor(np.ascontiguousarray(y), dtype=y_dtype, device=device)


def target_scale(y: np.ndarray, task: str) -> tuple[float, float]:
    """Regression trains on standardized targets, so that learning rates and penalty strengths
    mean the same whatever the units of ``y``; classification leaves labels alone."""
    if task != "regression":
        return 0.0, 1.0
    std = float(np.std(y))
    return float(np.mean(y)), std if std > 0 else 1.0


def fold_target_scale(model: nn.Module, mean: float, std: float) -> None:
    """Fold the target standardization into the last linear layer: the trained model then
    predicts in the original units, with no extra layer and the same zeros."""
    if (mean, std) == (0.0, 1.0):
        return
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(std)
        if last.bias is not None:
            last.bias.mul_(std).add_(mean)


def validation_penalty(penalty: Penalty, model: nn.Module) -> float:
    """The penalty's value on the weights the model uses at evaluation (L0: the gated weights)."""
    model.eval()
    with torch.no_grad():
        current = prunable_weights(model)
        return float(sum(penalty.value(current[i]) for i in penalty.targets(len(current))))


def evaluate_loss(model: nn.Module, X: Tensor, y: Tensor, loss_fn, batch_size: int = 4096) -> float:
    """Mean loss over a split in eval mode, without gradients."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(X), batch_size):
            out = model(X[start : start + batch_size])
            total += float(loss_fn(out, y[start : start + batch_size])) * len(out)
    return total / max(len(X), 1)


def log_progress(log: EpochLog) -> None:
    """The default progress callback: one line per epoch."""
    val = "" if log.val_loss is None else f" val {log.val_loss:.4f}"
    logger.info(
        "epoch %d/%d loss %.4f%s density %.3f lr %.1e %.2fs",
        log.epoch + 1, log.total_epochs, log.train_loss, val, log.density, log.lr, log.seconds,
    )


def fit(
    model: nn.Module,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray | None,
    y_val: np.ndarray | None,
    *,
    task: str,
    settings: TrainSettings,
    penalty: Penalty | None = None,
    pruner: Pruner | None = None,
    callbacks: Sequence[Callback] = (),
    shard: Shard | None = None,
) -> tuple[nn.Module, History]:
    """Train ``model`` and return it (possibly replaced by the pruner's smaller network) with its
    history. The objective is ``mean loss + penalty``; proximal penalties act after each step.

    ``shard``: this process is one data-parallel rank (its process group joined), training on its
    slice of every global batch (:mod:`sparsetrain.core.distributed`); every rank returns the
    same model."""
    penalty = penalty or NoPenalty()
    pruner = pruner or NoPruning()
    if len(X_train) == 0:
        raise SparsetrainError("the training split is empty: lower data.test_size / data.val_size")
    seed_everything(settings.seed)
    device = resolve_device(settings.device)
    model = model.to(device)
    channels_last = device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules())
    if channels_last:  # oneDNN's CPU convolutions: LeNet-5 on 28x28 trained 25% faster (1 thread)
        model = model.to(memory_format=torch.channels_last)
    loss_fn = loss_function(task)
    target_mean, target_std = target_scale(y_train, task)
    X_tr, y_tr = as_tensors(X_train, (y_train - target_mean) / target_std, task, device)
    has_val = X_val is not None and len(X_val) > 0
    X_va, y_va = as_tensors(X_val, (y_val - target_mean) / target_std, task, device) if has_val else (None, None)

    weights = prunable_weights(model)
    penalized = [weights[i] for i in penalty.targets(len(weights))]
    penalty.attach(model, weights)
    pruner.attach(model, weights)
    world = 1 if shard is None else shard.world_size
    forward = model if shard is None else distributed.wrap(model, device)  # averages gradients
    total_epochs = pruner.total_epochs(settings.epochs)
    optimizer = make_optimizer(settings.optimizer, [p for p in model.parameters() if p.requires_grad], settings.lr)
    schedule = make_lr_schedule(settings.lr_schedule, optimizer, settings.epochs, total_epochs)
    use_amp = settings.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    batch_size = resolve_batch_size(settings.batch_size, len(X_tr))
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    min_rows = smallest_batch(has_batch_norm, world)
    if isinstance(pruner, StepPruner):  # set / rigl: step-counted mask updates, optimizer state reset
        steps = steps_per_epoch(len(X_tr), batch_size, min_rows) * total_epochs
        pruner.bind_optimizer(optimizer, steps)

    history = History(device=str(device))
    best_val, best_state, waited = math.inf, None, 0
    # The penalty shapes the weights until the pruner's masks are final; from then on the masks
    # alone set the density (so gmp ends at exactly its target, whatever the penalty zeroed).
    frozen_from = pruner.frozen_from(total_epochs)
    started = time.perf_counter()
    for epoch in range(total_epochs):
        epoch_start = time.perf_counter()
        penalize = frozen_from == 0 or epoch < frozen_from
        pruner.on_epoch_start(epoch, total_epochs)
        model.train()
        order = torch.randperm(len(X_tr), device=device, generator=generator)
        running, seen = torch.zeros((), device=device), 0
        for start in range(0, len(X_tr), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < min_rows:
                continue  # batch norm cannot normalize a batch of one
            rows = idx if shard is None else shard.rows(idx)
            with torch.autocast(device.type, enabled=use_amp):
                output = forward(X_tr[rows])
                data_loss = loss_fn(output, y_tr[rows]) if len(rows) else output.sum()
                # Weighted by the rank's share of the batch, the ranks' average gradient is the
                # whole batch's, also for a last batch that does not split evenly.
                data_term = data_loss if shard is None else data_loss * (len(rows) * world / len(idx))
                loss = data_term + penalty.regularization(model) if penalize else data_term
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if shard is not None and isinstance(pruner, StepPruner):  # RigL's dense gradient
                distributed.average_over_ranks(pruner.recorded_gradients())
            scaler.step(optimizer)
            scaler.update()
            with torch.no_grad():
                if penalize:
                    for w, step in zip(penalized, prox_steps(optimizer, penalized)):
                        w.copy_(penalty.prox(w, step))
                pruner.after_step()
            running += data_loss.detach() * len(rows)
            seen += len(rows)
        schedule.step()
        if shard is not None:
            running, seen = distributed.sum_over_ranks([float(running), seen], device)
        train_loss = float(running) / max(seen, 1)
        if not math.isfinite(train_loss):
            raise DivergedError(
                f"training diverged at epoch {epoch + 1} (loss {train_loss}); lower training.lr or sparsity.strength"
            )
        val_loss = evaluate_loss(model, X_va, y_va, loss_fn) if has_val else None
        history.train_loss.append(train_loss)
        if val_loss is not None:
            history.val_loss.append(val_loss)
        history.density.append(density_of(prunable_weights(model)))  # eval mode: L0 gates decided
        history.epochs_run = epoch + 1
        log = EpochLog(epoch, total_epochs, train_loss, val_loss, history.density[-1],
                       optimizer.param_groups[0]["lr"], time.perf_counter() - epoch_start)
        for callback in callbacks:
            callback(log)
        if val_loss is None or epoch < frozen_from:
            continue
        # Early stopping watches the regularized objective on the validation split: the
        # validation loss alone would always prefer the earliest, least sparse epoch.
        objective = val_loss + (validation_penalty(penalty, model) if penalize else 0.0)
        if objective < best_val - 1e-6:
            best_val, waited, history.best_epoch = objective, 0, epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
            if settings.early_stopping is not None and waited >= settings.early_stopping:
                history.stopped_early = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    if shard is not None:
        distributed.check_in_sync(shard, "weights", list(model.parameters()), device)
    penalty.finalize(model)
    model = pruner.finalize(model)
    fold_target_scale(model, target_mean, target_std)
    if channels_last:  # hand back the usual layout: export and user code expect contiguous weights
        model = model.to(memory_format=torch.contiguous_format)
    model.eval()
    history.seconds = time.perf_counter() - started
    return model, history
