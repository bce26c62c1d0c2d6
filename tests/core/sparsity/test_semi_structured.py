"""2:4 weights for the sparse tensor cores (core/sparsity/semi_structured.py): the pattern check
and the one-line refusals run everywhere; the conversion itself needs a CUDA GPU of compute
capability 8.0+ and is skipped elsewhere (it ran on a lent H200: see benchmarks/README.md)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsetrain.core.models import build_model, prunable_weights
from sparsetrain.core.sparsity.semi_structured import (
    SemiStructuredLinear,
    is_two_four,
    semi_structured_unavailable,
    to_semi_structured,
    two_four,
)
from sparsetrain.errors import SparsetrainError

CUDA_24 = semi_structured_unavailable("cuda") is None


def nm_mlp(n_in: int = 784, hidden=(300, 100), n_out: int = 10) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("mlp", n_in, n_out, hidden=hidden)
    with torch.no_grad():
        for w in prunable_weights(model):
            w.copy_(two_four(w))
    return model


def test_two_four_masked_weights_have_the_pattern_and_dense_ones_do_not():
    torch.manual_seed(0)
    w = torch.randn(30, 50)  # 50 inputs: a last, shorter group
    assert not is_two_four(w)
    assert is_two_four(two_four(w))
    assert (two_four(w) != 0).sum() == 30 * (12 * 2 + 2)


def test_the_cpu_is_refused_in_one_line():
    assert "CUDA device" in semi_structured_unavailable("cpu")
    with pytest.raises(SparsetrainError, match="CUDA device, not 'cpu'") as raised:
        to_semi_structured(nm_mlp())
    assert "\n" not in str(raised.value)


def test_only_half_precision_is_accepted():
    with pytest.raises(SparsetrainError, match="float16 or bfloat16"):
        to_semi_structured(nm_mlp(), dtype=torch.float32)


@pytest.mark.skipif(not CUDA_24, reason="needs a CUDA GPU of compute capability 8.0+")
def test_a_model_without_the_pattern_is_refused():
    torch.manual_seed(0)
    with pytest.raises(SparsetrainError, match="sparsity.pruning=nm"):
        to_semi_structured(build_model("mlp", 64, 10, hidden=(32,)).cuda())


@pytest.mark.skipif(not CUDA_24, reason="needs a CUDA GPU of compute capability 8.0+")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_converted_model_computes_what_the_dense_one_does(dtype):
    dense = nm_mlp().cuda().to(dtype).eval()
    sparse = to_semi_structured(nm_mlp().cuda(), dtype)
    assert sum(isinstance(m, SemiStructuredLinear) for m in sparse.modules()) == 3
    x = torch.randn(256, 784, device="cuda", dtype=dtype)
    with torch.inference_mode():
        want, got = dense(x).float(), sparse(x).float()
    assert got.shape == want.shape == (256, 10)
    tol = 2e-2 if dtype == torch.float16 else 1e-1
    assert torch.allclose(got, want, atol=tol * want.abs().max().item(), rtol=0)
    assert (got.argmax(1) == want.argmax(1)).float().mean() > 0.98
