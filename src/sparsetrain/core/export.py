"""Sparse weights on disk and in memory: what the zeros save.

On disk: ``safetensors`` (no pickle). Each prunable weight is stored in the smaller of two
encodings, with 32-bit indices at most:

- ``bitmask``: one bit per entry (``np.packbits``) + the nonzero values; ``n/8 + 4 nnz`` bytes,
  best from about 3% density up;
- ``csr``: int32 row pointers and column indices + values; ``4 (rows + 1) + 8 nnz`` bytes, best
  for very sparse tensors.

Everything else (biases, norm statistics, dense layers) is stored as is. The architecture goes
into the file's metadata, so :func:`load_sparse` rebuilds a working model from the file alone.

In memory: :func:`to_sparse_inference` swaps sparse ``nn.Linear`` layers for :class:`SparseLinear`,
a CSR matrix product, which beats dense kernels at large batches below about 20% density.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from sparsetrain.core.models import build_model, prunable_weights

FORMAT = "sparsetrain-sparse-v1"


def _encode(name: str, w: Tensor) -> tuple[dict[str, Tensor], dict[str, Any]]:
    flat = w.detach().cpu().float().contiguous()
    matrix = flat.reshape(flat.shape[0], -1)
    mask = matrix != 0
    values = matrix[mask].contiguous()
    nnz, rows = values.numel(), matrix.shape[0]
    bitmask_bytes = (matrix.numel() + 7) // 8 + 4 * nnz
    csr_bytes = 4 * (rows + 1) + 8 * nnz
    info: dict[str, Any] = {"shape": list(w.shape)}
    if csr_bytes < bitmask_bytes:
        csr = matrix.to_sparse_csr()
        info["encoding"] = "csr"
        return {
            f"{name}::indptr": csr.crow_indices().to(torch.int32),
            f"{name}::indices": csr.col_indices().to(torch.int32),
            f"{name}::values": csr.values().contiguous(),
        }, info
    info["encoding"] = "bitmask"
    bits = torch.from_numpy(np.packbits(mask.numpy().ravel()))
    return {f"{name}::bitmask": bits, f"{name}::values": values}, info


def _decode(name: str, tensors: dict[str, Tensor], info: dict[str, Any]) -> Tensor:
    shape = info["shape"]
    rows = shape[0]
    cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    values = tensors[f"{name}::values"]
    if info["encoding"] == "csr":
        matrix = torch.sparse_csr_tensor(
            tensors[f"{name}::indptr"].long(), tensors[f"{name}::indices"].long(), values, size=(rows, cols)
        ).to_dense()
    else:
        mask = np.unpackbits(tensors[f"{name}::bitmask"].numpy())[: rows * cols].astype(bool)
        dense = torch.zeros(rows * cols, dtype=values.dtype)
        dense[torch.from_numpy(mask)] = values
        matrix = dense
    return matrix.reshape(shape)


def architecture(model: nn.Module) -> dict[str, Any]:
    """The ``build_model`` arguments of ``model``, with hidden sizes read off its actual layers
    (structured pruning shrinks them)."""
    arch = dict(getattr(model, "arch", {}))
    if not arch:
        raise ValueError("model has no 'arch' attribute: build it with sparsetrain.core.models.build_model")
    widths = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)][:-1]
    if arch.get("kind") == "mlp":
        arch["hidden"] = widths
    elif arch.get("kind") == "cnn":
        arch["channels"] = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
        arch["fc"] = widths
    return arch


def sparse_state(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of the sparse file format (see module docstring)."""
    names = {id(p): n for n, p in model.named_parameters()}
    sparse_names = {names[id(w)] for w in prunable_weights(model)}
    tensors: dict[str, Tensor] = {}
    encodings: dict[str, Any] = {}
    for name, value in model.state_dict().items():
        if name in sparse_names:
            encoded, info = _encode(name, value)
            tensors.update(encoded)
            encodings[name] = info
        else:
            tensors[name] = value.detach().cpu().contiguous()
    metadata = {
        "format": FORMAT,
        "architecture": json.dumps(architecture(model)),
        "encodings": json.dumps(encodings),
    }
    return tensors, metadata


def to_bytes(model: nn.Module) -> bytes:
    tensors, metadata = sparse_state(model)
    return st_save(tensors, metadata=metadata)


def save_sparse(model: nn.Module, path: str | Path) -> int:
    """Write the sparse safetensors file; returns its size in bytes."""
    data = to_bytes(model)
    Path(path).write_bytes(data)
    return len(data)


def from_bytes(data: bytes) -> nn.Module:
    """Rebuild the model from a sparse safetensors file's bytes."""
    tensors = st_load(data)
    metadata = _metadata(data)
    if metadata.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} file (format {metadata.get('format')!r})")
    arch = json.loads(metadata["architecture"])
    encodings = json.loads(metadata["encodings"])
    state = {name: _decode(name, tensors, info) for name, info in encodings.items()}
    state.update({k: v for k, v in tensors.items() if "::" not in k})
    kwargs = {k: v for k, v in arch.items() if k not in ("kind", "n_features", "n_outputs")}
    if kwargs.get("image_shape") is not None:
        kwargs["image_shape"] = tuple(kwargs["image_shape"])
    model = build_model(arch["kind"], arch["n_features"], arch["n_outputs"], **kwargs)
    model.load_state_dict(state)
    return model.eval()


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header: 8-byte little-endian length, then JSON."""
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    return header.get("__metadata__", {})


def load_sparse(path: str | Path) -> nn.Module:
    return from_bytes(Path(path).read_bytes())


class SparseLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` in CSR: work and memory scale with the nonzeros."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().to_sparse_csr(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.sparse.mm(self.weight, x.t()).t()
        return out if self.bias is None else out + self.bias


def to_sparse_inference(model: nn.Module, max_density: float = 0.3) -> nn.Module:
    """A copy of ``model`` for CPU inference where every Linear layer at or below ``max_density``
    runs as a CSR product; denser layers stay dense (the sparse kernel would be slower)."""
    sparse = copy.deepcopy(model).cpu().eval()

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.Linear):
                density = float(torch.count_nonzero(child.weight)) / child.weight.numel()
                if density <= max_density:
                    setattr(module, name, SparseLinear(child))
            else:
                swap(child)

    swap(sparse)
    return sparse
