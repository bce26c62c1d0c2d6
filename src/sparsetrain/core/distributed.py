"""Data-parallel training on torch.distributed: the ranks, their shard of each batch, the launch.

Every rank runs the same :func:`sparsetrain.core.training.fit` on a full copy of the data with
the same seed, so all ranks draw the same permutation and the same global batches; each rank
takes its slice of every global batch (:meth:`Shard.rows`) and DistributedDataParallel averages
the gradients. A rank's loss is weighted by its share of the batch, so the averaged gradient is
that of the whole batch, even for a last batch that does not split evenly: the ranks make the
same steps as one process with the same global batch and seed (to float rounding).

Masks, proximal steps and pruning schedules need no messages of their own: they are computed
from the weights and gradients, which are identical on every rank after each averaged step,
and the dynamic pruners draw from a generator seeded identically on every rank. At the end the
ranks compare checksums of their weights and masks (:func:`check_in_sync`), so that a rank that
drifted fails the run instead of passing unnoticed.

torch's DistributedSampler is not used: it pads the data by repeating rows so that every rank
gets as many, which changes the batches against one process; the slice of a shared permutation
does not.

Two ways in: :func:`launch` spawns ``world_size`` ranks on this machine from one process (the
``kedro run`` node; only the caller, never a rank, logs), and a process started by ``torchrun``
finds its place in the environment (:func:`torchrun_shard`) and joins as that rank.
"""

from __future__ import annotations

import copy
import datetime
import multiprocessing.connection
import os
import signal
import socket
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sparsetrain.errors import SparsetrainError

# Collectives wait at most this long for a peer; a dead peer is usually noticed at once (its
# sockets close), this bounds the rest (a peer that hangs).
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world_size`` data-parallel ranks."""

    rank: int
    world_size: int
    local_rank: int = 0

    def rows(self, batch: Tensor) -> Tensor:
        """This rank's contiguous slice of a global batch (the first ranks get the extra rows)."""
        return torch.tensor_split(batch, self.world_size)[self.rank]

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torchrun_shard() -> Shard | None:
    """The rank that torchrun (or any launcher following its environment contract) started."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or "MASTER_ADDR" not in os.environ:
        return None
    world_size = int(os.environ["WORLD_SIZE"])
    if world_size < 2:
        return None
    return Shard(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def is_worker_rank() -> bool:
    """A torchrun rank other than 0: it trains, and never logs or opens the MLflow store."""
    shard = torchrun_shard()
    return shard is not None and not shard.is_main


def backend_for(device: torch.device, backend: str = "auto") -> str:
    """nccl between GPUs, gloo between CPU processes."""
    if backend != "auto":
        return backend
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: str, shard: Shard) -> str:
    """One GPU per rank on CUDA (``cuda:<local rank>``); CPU ranks share the CPU."""
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return f"cuda:{shard.local_rank}" if cuda else "cpu"


def check_world(world_size: int, device: str) -> None:
    """Refuse, before any work, a world the machine cannot hold: one GPU per CUDA rank."""
    if world_size < 2:
        return
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda and torch.cuda.device_count() < world_size:
        raise SparsetrainError(
            f"training.distributed.world_size {world_size} needs {world_size} GPUs, this machine has "
            f"{torch.cuda.device_count()}; lower it or set training.device=cpu"
        )


def join(shard: Shard, device: torch.device, backend: str = "auto", init_method: str = "env://") -> None:
    """Join the process group as ``shard.rank`` (once per process)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend_for(device, backend), init_method=init_method, rank=shard.rank,
        world_size=shard.world_size, timeout=COLLECTIVE_TIMEOUT,
    )


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model under DistributedDataParallel: its backward averages the gradients of all ranks."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sum_over_ranks(values: Sequence[float], device: torch.device) -> list[float]:
    """Each value summed over the ranks (one all-reduce)."""
    import torch.distributed as dist

    total = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


def average_over_ranks(tensors: Sequence[Tensor]) -> None:
    """Replace each tensor by its mean over the ranks, in place."""
    import torch.distributed as dist

    for tensor in tensors:
        dist.all_reduce(tensor)
        tensor.div_(dist.get_world_size())


def checksum(tensors: Sequence[Tensor]) -> Tensor:
    """Two numbers that differ when the tensors do: their sum and a position-weighted sum."""
    parts = []
    for t in tensors:
        flat = t.detach().double().flatten()
        weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
        parts.append(torch.stack([flat.sum(), (flat * weights).sum() / max(flat.numel(), 1)]))
    return torch.stack(parts).sum(0) if parts else torch.zeros(2, dtype=torch.float64)


def check_in_sync(shard: Shard, what: str, tensors: Sequence[Tensor], device: torch.device) -> None:
    """Fail when this rank's ``tensors`` differ from rank 0's (identical ranks are the invariant)."""
    import torch.distributed as dist

    mine = checksum(tensors).to(device)
    gathered = [torch.zeros_like(mine) for _ in range(shard.world_size)]
    dist.all_gather(gathered, mine)
    for rank, theirs in enumerate(gathered[1:], start=1):
        if not torch.allclose(theirs, gathered[0], rtol=1e-9, atol=1e-9):
            raise SparsetrainError(
                f"training.distributed: the {what} of rank {rank} drifted from rank 0's; "
                "please report this with the run's parameters"
            )


# --------------------------------------------------------------------------------------------
# launch: world_size ranks on this machine, spawned from the calling process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_threads(world_size: int) -> int:
    """CPU threads per rank: the cores shared out, so that ranks do not oversubscribe them."""
    return max(1, (os.cpu_count() or 1) // world_size)


def _run_rank(
    rank: int, world_size: int, port: int, backend: str, device: str, result: str, events: Any,
    train: Callable[..., Any], kwargs: dict[str, Any], arrays: tuple[str, ...],
) -> None:
    """One spawned rank: join, train, and (rank 0) save what ``train`` returns for the caller."""
    import torch.distributed as dist

    shard = Shard(rank, world_size, local_rank=rank)
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(_rank_threads(world_size))
    # torch hands tensors to spawned processes in shared memory: the arrays stay shared (read
    # only), everything else (the model's parameters) becomes this rank's own copy.
    kwargs = {k: (v.numpy() if k in arrays else copy.deepcopy(v)) for k, v in kwargs.items()}
    kwargs["settings"] = replace(kwargs["settings"], device=rank_device(device, shard))
    try:
        join(shard, torch.device(kwargs["settings"].device), backend, f"tcp://127.0.0.1:{port}")
        callbacks = [events.put] if shard.is_main else []
        trained = train(**kwargs, shard=shard, callbacks=callbacks)
        if shard.is_main:
            torch.save(trained, result)
    except BaseException as error:
        events.put(RankFailure(rank, type(error).__name__, str(error).splitlines()[0] if str(error) else ""))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@dataclass(frozen=True)
class RankFailure:
    """What a rank that raised sends back before it exits."""

    rank: int
    kind: str
    message: str


def launch(
    train: Callable[..., Any],
    kwargs: dict[str, Any],
    world_size: int,
    *,
    device: str = "auto",
    backend: str = "auto",
    callbacks: Sequence[Callable[[Any], None]] = (),
) -> Any:
    """Run ``train(**kwargs, shard=..., callbacks=...)`` on ``world_size`` spawned ranks and return
    rank 0's result. Rank 0's callback events (the per-epoch logs) reach ``callbacks`` here, in
    the calling process. A rank that raises or dies stops the others and raises here in one line.

    ``train`` must be importable by name (a module-level function) and ``kwargs`` picklable;
    numpy arrays travel in shared memory instead of through the pipe.
    """
    import torch.multiprocessing as mp

    check_world(world_size, device)
    arrays = tuple(k for k, v in kwargs.items() if isinstance(v, np.ndarray))
    shared = {k: (torch.from_numpy(np.ascontiguousarray(v)).share_memory_() if k in arrays else v)
              for k, v in kwargs.items()}
    context = mp.get_context("spawn")
    events = context.SimpleQueue()
    failures: list[RankFailure] = []

    def drain() -> None:
        while not events.empty():
            event = events.get()
            if isinstance(event, RankFailure):
                failures.append(event)
            else:
                for callback in callbacks:
                    callback(event)

    with tempfile.TemporaryDirectory(prefix="sparsetrain-ranks-") as folder:
        result = str(Path(folder) / "rank0.pt")
        port = free_port()
        ranks = [
            context.Process(
                target=_run_rank, name=f"sparsetrain-rank-{rank}", daemon=True,
                args=(rank, world_size, port, backend, device, result, events, train, shared, arrays),
            )
            for rank in range(world_size)
        ]
        try:
            for process in ranks:
                process.start()
            while any(p.exitcode is None for p in ranks) and all(p.exitcode in (None, 0) for p in ranks):
                drain()
                alive = [p.sentinel for p in ranks if p.exitcode is None]
                multiprocessing.connection.wait(alive, timeout=0.2)
            if any(p.exitcode != 0 for p in ranks):
                # the others fail soon after a peer (their collectives break): let them report
                for process in ranks:
                    process.join(timeout=5)
                drain()
                raise _launch_error(ranks, failures, world_size)
            drain()
            return torch.load(result, weights_only=False)
        finally:
            for process in ranks:
                if process.is_alive():
                    process.kill()
                    process.join()


def _launch_error(ranks: list[Any], failures: list[RankFailure], world_size: int) -> SparsetrainError:
    """One line: the rank that died, else the first that raised (its peers' broken collectives
    are consequences, not causes)."""
    raised = {f.rank for f in failures}
    for rank, process in enumerate(ranks):
        code = process.exitcode
        if code is not None and code != 0 and rank not in raised:
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            return SparsetrainError(
                f"training.distributed: rank {rank} of {world_size} died ({how}); nothing was trained"
            )
    if failures:
        first = failures[0]
        return SparsetrainError(
            f"training.distributed: rank {first.rank} of {world_size} failed ({first.kind}: {first.message})"
        )
    return SparsetrainError(f"training.distributed: a rank of {world_size} failed without a reason")
