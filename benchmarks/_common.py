"""What every benchmark needs alike: where results go, the machine they ran on, the Fashion-MNIST
splits, test accuracy and writing the JSON. Heavy libraries are imported inside the functions, so
that importing this costs a timed child process (``pipeline.py``'s worker) nothing."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """CPU model, cores, versions and the load at start: the context a timing needs to be read."""
    import torch

    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
        "platform": platform.platform(), "loadavg_at_start": os.getloadavg(),
    }


def load_splits(max_train: int | None, seed: int = 0):
    """Official Fashion-MNIST split: a stratified 10% of the training part is the validation slice,
    the t10k images the test set, standardized with statistics of the training part only.
    Returns ``(Splits, DatasetInfo)``, what :func:`sparsetrain.recipe.train_network` takes."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from sparsetrain.core.data import DatasetInfo, Splits, Standardizer, load_fashion_mnist

    ds = load_fashion_mnist(max_train_samples=max_train)
    start = ds.official_test_start
    tr, va = train_test_split(np.arange(start), test_size=0.1, random_state=seed, stratify=ds.y[:start])
    scaler = Standardizer().fit(ds.X[tr])
    splits = Splits(
        scaler.transform(ds.X[tr]), ds.y[tr],
        scaler.transform(ds.X[va]), ds.y[va],
        scaler.transform(ds.X[start:]), ds.y[start:],
    )
    return splits, DatasetInfo.of(ds)


def accuracy(model, X, y, batch_size: int = 4096) -> float:
    """Plain forward pass and argmax on the CPU, in batches (the evaluation node's ``predict``
    pulls in matplotlib)."""
    import torch

    model = model.to("cpu").eval()
    with torch.inference_mode():
        out = torch.cat([model(torch.as_tensor(X[i : i + batch_size])) for i in range(0, len(X), batch_size)])
    return float((out.argmax(dim=1).numpy() == y).mean())


def write_json(path: Path, payload: Any, default=None) -> None:
    """Write ``payload`` as indented JSON, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=default))
