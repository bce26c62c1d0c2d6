"""The pruning driver contract the trainer calls, and the no-op pruner.

A pruner keeps *what* to prune (a mask rule, ``masks.py``) apart from *how much and when*
(a schedule, ``schedules.py``); this module drives both through the training loop. Masks only
shrink, and masked weights stay exactly zero through every optimizer step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from torch import nn


@runtime_checkable
class Pruner(Protocol):
    """What the trainer calls, in this order.

    - ``total_epochs(epochs)``: how many epochs to run in all (training plus any fine-tuning).
    - ``attach(model, weights)``: once, before the optimizer exists.
    - ``on_epoch_start(epoch, total_epochs)``: update the masks by the schedule, zero the weights.
    - ``after_step()``: after every optimizer (and prox) step, re-apply the masks.
    - ``frozen_from(total_epochs)``: first epoch at which masks no longer change; early stopping
      and best-epoch tracking only count from there.
    - ``finalize(model)``: make the pruning permanent; may return a physically smaller network.
    """

    def total_epochs(self, epochs: int) -> int: ...

    def attach(self, model: nn.Module, weights: Sequence[nn.Parameter]) -> None: ...

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None: ...

    def after_step(self) -> None: ...

    def frozen_from(self, total_epochs: int) -> int: ...

    def finalize(self, model: nn.Module) -> nn.Module: ...


class NoPruning:
    """Train without masks."""

    def total_epochs(self, epochs: int) -> int:
        return epochs

    def attach(self, model: nn.Module, weights: Sequence[nn.Parameter]) -> None:
        return None

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        return None

    def after_step(self) -> None:
        return None

    def frozen_from(self, total_epochs: int) -> int:
        return 0

    def finalize(self, model: nn.Module) -> nn.Module:
        return model
