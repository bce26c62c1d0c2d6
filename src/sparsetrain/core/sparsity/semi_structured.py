"""2:4 weights on the sparse tensor cores: the linear layers of an ``nm`` model (``sparsity.pruning:
nm``, n=2, m=4) converted with ``torch.sparse.to_sparse_semi_structured`` for CUDA inference.

The kernels (cuSPARSELt, or CUTLASS) need a GPU of compute capability 8.0+, half precision and
shapes in multiples of their tiles; :class:`SemiStructuredLinear` pads the weight with zero rows and
columns (zeros keep the 2:4 pattern) and the input with zero columns, then drops the padded outputs.
Whether it is faster than dense depends on the shape: small layers are reported slower than
dense on Hopper. ``benchmarks/semi_structured.py`` measures it instead of assuming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparsetrain.core.sparsity.masks import nm_mask
from sparsetrain.errors import SparsetrainError

# Tiles that suit both of torch's backends for float16 / bfloat16 (CUTLASS: 32 rows x 64 columns;
# cuSPARSELt: 16 x 16).
ROW_TILE, COL_TILE = 32, 64
HALF_DTYPES = (torch.float16, torch.bfloat16)


def semi_structured_unavailable(device: torch.device | str) -> str | None:
    """Why ``device`` cannot run 2:4 kernels, or None where it can."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"2:4 sparse kernels need a CUDA device, not '{device}'"
    if not torch.cuda.is_available():
        return "2:4 sparse kernels need CUDA, and none is available"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return f"2:4 sparse kernels need compute capability 8.0+, this GPU has {major}.{minor}"
    if not hasattr(torch.sparse, "to_sparse_semi_structured"):
        return f"torch {torch.__version__} has no torch.sparse.to_sparse_semi_structured"
    return None


def is_two_four(weight: Tensor) -> bool:
    """Every group of 4 consecutive inputs of every row holds at most 2 nonzeros."""
    rows, cols = weight.shape
    padded = F.pad(weight.detach(), (0, (-cols) % 4))
    return bool(((padded.reshape(rows, -1, 4) != 0).sum(dim=2) <= 2).all())


def _round_up(n: int, tile: int) -> int:
    return -(-n // tile) * tile


class SemiStructuredLinear(nn.Module):
    """``nn.Linear`` whose 2:4 weight is held compressed for the sparse tensor cores."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        rows, cols = _round_up(self.out_features, ROW_TILE), _round_up(self.in_features, COL_TILE)
        weight = linear.weight.detach().to(dtype)
        weight = F.pad(weight, (0, cols - self.in_features, 0, rows - self.out_features))
        self.weight = nn.Parameter(torch.sparse.to_sparse_semi_structured(weight), requires_grad=False)
        bias = linear.bias.detach().to(dtype) if linear.bias is not None else None
        self.bias = None if bias is None else nn.Parameter(F.pad(bias, (0, rows - self.out_features)),
                                                           requires_grad=False)
        self._pad_inputs = cols - self.in_features

    def forward(self, x: Tensor) -> Tensor:
        if self._pad_inputs:
            x = F.pad(x, (0, self._pad_inputs))
        return F.linear(x, self.weight, self.bias)[..., : self.out_features]


def to_semi_structured(model: nn.Module, dtype: torch.dtype = torch.float16) -> nn.Module:
    """The model in ``dtype`` on its CUDA device, each 2:4 ``nn.Linear`` swapped for a
    :class:`SemiStructuredLinear` (other layers stay dense). Raises in one line where the device
    cannot run the kernels or no linear layer has the pattern."""
    if dtype not in HALF_DTYPES:
        raise SparsetrainError(f"2:4 sparse kernels run in float16 or bfloat16, not {dtype}")
    device = next(model.parameters()).device
    reason = semi_structured_unavailable(device)
    if reason:
        raise SparsetrainError(f"{reason}; serve the model dense or with its sparse export instead")
    model = model.to(dtype).eval()
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and is_two_four(child.weight):
                setattr(parent, name, SemiStructuredLinear(child, dtype))
                swapped += 1
    if not swapped:
        raise SparsetrainError(
            "no linear layer of the model has the 2:4 pattern; train it with sparsity.pruning=nm "
            "(sparsity.n=2, sparsity.m=4)"
        )
    return model


def two_four(weight: Tensor) -> Tensor:
    """``weight`` with the 2:4 mask of its magnitudes applied (for benchmarks and tests)."""
    return weight * nm_mask(weight, 2, 4)
