"""Network builders: the architecture only, no training logic.

Every builder returns a flat ``nn.Sequential`` that takes flattened rows ``(n, features)`` and
whose prunable weights (weight matrices and convolution kernels) come out of
:func:`prunable_weights` in forward order, so that penalties and pruners address layers by
position. Its children are only prunable layers (Linear, Conv2d), BatchNorm, ReLU / Tanh, Dropout,
AvgPool2d, Flatten and Unflatten: the layouts structured pruning knows how to slice.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from sparsetrain.core.init import initialize
from sparsetrain.errors import SparsetrainError

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def linear(n_features: int, n_outputs: int) -> nn.Sequential:
    """Multinomial logistic regression (classification) or linear regression: one affine map."""
    return nn.Sequential(nn.Flatten(), nn.Linear(n_features, n_outputs))


def mlp(
    n_features: int,
    n_outputs: int,
    hidden: Sequence[int] = (300, 100),
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """ReLU multilayer perceptron: [Linear, (BatchNorm), ReLU, (Dropout)] per hidden layer."""
    layers: list[nn.Module] = [nn.Flatten(), *fully_connected(n_features, hidden, nn.ReLU, dropout, batch_norm)]
    layers.append(nn.Linear(hidden[-1] if hidden else n_features, n_outputs))
    return nn.Sequential(*layers)


def fully_connected(
    n_in: int, sizes: Sequence[int], activation: type[nn.Module], dropout: float, batch_norm: bool
) -> list[nn.Module]:
    """Hidden layers [Linear, (BatchNorm1d), activation, (Dropout)] of an MLP or a CNN head."""
    layers: list[nn.Module] = []
    for size in sizes:
        layers.append(nn.Linear(n_in, size))
        if batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(activation())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        n_in = size
    return layers


def _conv_out(size: int, kernel: int, padding: int) -> int:
    return size + 2 * padding - kernel + 1


def cnn(
    image_shape: Sequence[int],
    n_outputs: int,
    dropout: float = 0.0,
    batch_norm: bool = False,
    conv_channels: Sequence[int] = (6, 16),
    fc: Sequence[int] = (120, 84),
) -> nn.Sequential:
    """A small LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to document
    recognition"): conv 5x5 (6 channels, padding 2) -> tanh -> average-pool 2, conv 5x5
    (16 channels) -> tanh -> average-pool 2, then fully connected 120 -> 84 -> ``n_outputs`` with
    tanh. It starts with ``Unflatten(C, H, W)``, so it takes flattened rows ``(n, C*H*W)`` like the
    other models.

    As in LeNet-5 the activations are tanh and the subsampling averages: on 8x8 digits the
    ReLU / max-pooling variant trained more slowly and did not recover from magnitude pruning
    within a short budget (0.5-0.6 test accuracy at 20% density after 8 epochs, against ~0.9
    here). Small images: the second convolution is valid (28x28 -> 16x5x5 features) only when a
    5x5 window fits twice after the first pooling (pooled size >= 10); otherwise it is padded and
    the second pooling is skipped, so 8x8 digits keep a 16x4x4 map. With ``batch_norm`` a
    BatchNorm2d / BatchNorm1d follows each convolution / hidden linear layer; ``dropout`` follows
    each hidden fully connected layer.
    """
    if len(image_shape) != 3 or any(int(d) < 1 for d in image_shape):
        raise SparsetrainError(f"model.kind 'cnn' needs an image shape (C, H, W), got {tuple(image_shape)!r}")
    channels, height, width = (int(d) for d in image_shape)
    if min(height, width) < 2:
        raise SparsetrainError(
            f"model.kind 'cnn' needs images of at least 2x2 pixels, got {height}x{width}; use model.kind mlp"
        )
    layers: list[nn.Module] = [nn.Unflatten(1, (channels, height, width))]
    small = min(height, width) // 2 < 10
    in_channels = channels
    for index, out_channels in enumerate(conv_channels):
        padding = 0 if index == 1 and not small else 2
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=5, padding=padding))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.Tanh())
        height, width = _conv_out(height, 5, padding), _conv_out(width, 5, padding)
        if index == 0 or not small:
            layers.append(nn.AvgPool2d(2))
            height, width = height // 2, width // 2
        in_channels = out_channels
    layers.append(nn.Flatten())
    features = in_channels * height * width
    layers += fully_connected(features, fc, nn.Tanh, dropout, batch_norm)
    layers.append(nn.Linear(fc[-1] if fc else features, n_outputs))
    return nn.Sequential(*layers)


def build_model(
    kind: str,
    n_features: int,
    n_outputs: int,
    *,
    hidden: Sequence[int] = (300, 100),
    dropout: float = 0.0,
    batch_norm: bool = False,
    init: str = "kaiming_uniform",
    image_shape: tuple[int, int, int] | None = None,
    channels: Sequence[int] = (6, 16),
    fc: Sequence[int] = (120, 84),
) -> nn.Sequential:
    """Build ``model.kind`` and initialize it; call under a fixed torch seed for determinism.

    ``image_shape`` is ``(C, H, W)`` of image data (``None`` otherwise); ``cnn`` needs it."""
    if kind == "linear":
        model = linear(n_features, n_outputs)
    elif kind == "mlp":
        model = mlp(n_features, n_outputs, hidden, dropout, batch_norm)
    elif kind == "cnn":
        if image_shape is None:
            raise SparsetrainError(
                "model.kind 'cnn' needs image data with a (C, H, W) shape, but these features have "
                "none: the data source is not images, or compression (compression.method other than "
                "none) destroys the image shape; use model.kind mlp or linear, or set "
                "compression.method: none with image data (digits, fashion_mnist)"
            )
        size = 1
        for d in image_shape:
            size *= int(d)
        if size != n_features:
            raise SparsetrainError(
                f"model.kind 'cnn': image shape {tuple(image_shape)} holds {size} pixels but the data "
                f"has {n_features} features; set compression.method: none"
            )
        model = cnn(image_shape, n_outputs, dropout, batch_norm, channels, fc)
    else:
        raise SparsetrainError(f"model.kind '{kind}' is unknown; choose linear, mlp or cnn")
    initialize(model, init)
    # The build arguments travel with the model, so that exported files can rebuild it.
    model.arch = {
        "kind": kind, "n_features": n_features, "n_outputs": n_outputs, "hidden": list(hidden),
        "dropout": dropout, "batch_norm": batch_norm, "init": init,
        "image_shape": list(image_shape) if image_shape is not None else None,
        "channels": list(channels), "fc": list(fc),
    }
    return model


def prunable_weights(model: nn.Module) -> list[nn.Parameter]:
    """Weight matrices and kernels in forward order (biases and norm parameters excluded)."""
    return [m.weight for m in model.modules() if isinstance(m, PRUNABLE)]
