"""Sparse weights on disk and in memory: what the zeros save.

On disk: ``safetensors`` (no pickle). Each prunable weight is stored in the smaller of two
encodings, with 32-bit indices at most:

- ``bitmask``: one bit per entry (``np.packbits``) + the nonzero values; ``n/8 + 4 nnz`` bytes,
  best from about 3% density up;
- ``csr``: int32 row pointers and column indices + values; ``4 (rows + 1) + 8 nnz`` bytes, best
  for very sparse tensors.

Quantized (``quantize="fp16" | "int8"``, format ``sparsetrain-sparse-v2``): the nonzero values of
each prunable weight as half floats, or as int8 with one symmetric float32 scale per output row
(``max |w| / 127``: error at most half a scale step, zeros stay exact); their positions as the
smaller of the bitmask and relative indices (per-row nonzero counts + the number of zeros skipped
before each nonzero, uint8 when every gap is below 256, else uint16 / uint32). Each of these byte
streams is stored raw, zlib- or LZMA2-compressed (level 9, deterministic), whichever is smallest.
``none`` writes the v1 encodings above, byte for byte; :func:`from_bytes` reads both formats.

Everything else (biases, norm statistics, dense layers) is stored as is. The architecture goes
into the file's metadata, so :func:`load_sparse` rebuilds a working model from the file alone.
The metadata is one key, ``sparsetrain``, holding sorted JSON: safetensors writes its metadata map
in hash order (a Rust ``HashMap``, seeded per process), so several keys would give the same model
different bytes in every process; one key makes the file reproducible byte for byte.

In memory: :func:`to_sparse_inference` runs the sparse ``nn.Linear`` layers as CSR matrix products
on feature-major activations (:class:`FeatureMajorChain`), which beat dense kernels from batches of
a few dozen rows below about 20% density.
"""

from __future__ import annotations

import copy
import json
import lzma
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from sparsetrain.core.models import build_model, prunable_weights
from sparsetrain.core.sparsity.masks import density_of

FORMAT = "sparsetrain-sparse-v1"
FORMAT_QUANTIZED = "sparsetrain-sparse-v2"
METADATA_KEY = "sparsetrain"
QUANTIZE = ("none", "fp16", "int8")


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
        csr = _csr32(matrix)
        info["encoding"] = "csr"
        return {
            f"{name}::indptr": csr.crow_indices(),
            f"{name}::indices": csr.col_indices(),
            f"{name}::values": csr.values().contiguous(),
        }, info
    info["encoding"] = "bitmask"
    bits = torch.from_numpy(np.packbits(mask.numpy().ravel()))
    return {f"{name}::bitmask": bits, f"{name}::values": values}, info


def _uint_dtype(maximum: int) -> str:
    """The narrowest little-endian unsigned integer holding ``maximum``."""
    return "|u1" if maximum < 2**8 else "<u2" if maximum < 2**16 else "<u4"


_CODECS = ("raw", "zlib", "lzma")
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]  # raw LZMA2: no xz header


def _compressed(raw: bytes) -> dict[str, bytes]:
    return {
        "zlib": zlib.compress(raw, 9),
        "lzma": lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS),
    }


def _pack(array: np.ndarray, dtype: str, compress: bool) -> tuple[Tensor, list[Any]]:
    """A stream as raw bytes, or zlib / LZMA2 (level 9, deterministic) where that is smaller,
    and its ``[dtype, codec]`` description."""
    raw = np.ascontiguousarray(array, dtype=np.dtype(dtype)).tobytes()
    candidates = {"raw": raw, **(_compressed(raw) if compress and raw else {})}
    codec = min(candidates, key=lambda c: (len(candidates[c]), _CODECS.index(c)))
    return torch.from_numpy(np.frombuffer(candidates[codec], dtype=np.uint8).copy()), [dtype, codec]


_STREAM_DTYPES = ("|u1", "<u2", "<u4", "|i1", "<f2", "<f4")


def _unpack(tensor: Tensor, meta: list[Any], limit: int) -> np.ndarray:
    """A stream back from its bytes; at most ``limit`` bytes decompressed (a corrupt or hostile
    file cannot inflate beyond the dense tensor)."""
    dtype, codec = meta
    if dtype not in _STREAM_DTYPES or codec not in _CODECS:
        raise ValueError(f"corrupt sparse file: stream {meta!r}")
    data = tensor.numpy().tobytes()
    if codec != "raw":
        inflater = zlib.decompressobj() if codec == "zlib" else lzma.LZMADecompressor(
            lzma.FORMAT_RAW, filters=_LZMA_FILTERS
        )
        data = inflater.decompress(data, limit)
    if len(data) % np.dtype(dtype).itemsize:
        raise ValueError("corrupt sparse file: a stream's length is not a whole number of entries")
    return np.frombuffer(data, dtype=np.dtype(dtype))


def _gaps(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row nonzero counts and, for each nonzero in row-major order, the zeros skipped since
    the previous nonzero of its row (or the row start): small numbers where a bitmask is long."""
    rows, cols = np.nonzero(mask)
    previous = np.empty_like(cols)
    previous[1:] = cols[:-1]
    first = np.ones(len(cols), dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    previous[first] = -1
    return mask.sum(axis=1), cols - previous - 1


def _mask_from_gaps(counts: np.ndarray, gaps: np.ndarray, rows: int, cols: int) -> np.ndarray:
    counts = counts.astype(np.int64)
    if len(counts) != rows or int(counts.sum()) != len(gaps):
        raise ValueError("corrupt sparse file: nonzero counts do not match the index stream")
    row_ids = np.repeat(np.arange(rows), counts)
    steps = np.cumsum(gaps.astype(np.int64) + 1)
    starts = np.cumsum(counts) - counts
    col_ids = steps - np.concatenate([[0], steps])[starts][row_ids] - 1  # steps since the row start
    if len(col_ids) and (gaps.min() < 0 or col_ids.max() >= cols):
        raise ValueError("corrupt sparse file: column index out of range")
    mask = np.zeros((rows, cols), dtype=bool)
    mask[row_ids, col_ids] = True
    return mask


def _quantize_values(matrix: np.ndarray, mask: np.ndarray, quantize: str, compress: bool) -> dict[str, Any]:
    """The nonzero values as fp16, or int8 with a symmetric float32 scale per output row."""
    values = matrix[mask]
    if quantize == "fp16":
        half = values.astype(np.float16)
        if not np.isfinite(half).all():
            raise ValueError("a weight overflows float16 (|w| > 65504): export with quantize='int8'")
        return {"values": _pack(half, "<f2", compress)}
    scales = (np.abs(matrix).max(axis=1) / 127).astype(np.float32)
    row_ids = np.nonzero(mask)[0]
    q = np.clip(np.rint(values / scales[row_ids]), -127, 127).astype(np.int8)
    return {"values": _pack(q, "|i1", compress), "scales": _pack(scales, "<f4", False)}


def _stored(streams: dict[str, tuple[Tensor, list[Any]]]) -> int:
    return sum(t.numel() for t, _ in streams.values())


def _encode_quantized(
    name: str, w: Tensor, quantize: str, compress: bool
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    matrix = w.detach().cpu().float().contiguous().reshape(w.shape[0], -1).numpy()
    mask = matrix != 0
    counts, gaps = _gaps(mask)
    by_gaps = {
        "counts": _pack(counts, _uint_dtype(int(counts.max(initial=0))), compress),
        "gaps": _pack(gaps, _uint_dtype(int(gaps.max(initial=0))), compress),
    }
    by_bitmask = {"bitmask": _pack(np.packbits(mask.ravel()), "|u1", compress)}
    index = "gaps" if _stored(by_gaps) < _stored(by_bitmask) else "bitmask"
    streams = by_gaps if index == "gaps" else by_bitmask
    streams.update(_quantize_values(matrix, mask, quantize, compress))
    info = {
        "shape": list(w.shape), "encoding": index, "values": quantize,
        "streams": {k: meta for k, (_, meta) in streams.items()},
    }
    return {f"{name}::{k}": t for k, (t, _) in streams.items()}, info


def _decode_quantized(name: str, tensors: dict[str, Tensor], info: dict[str, Any]) -> Tensor:
    shape, streams = info["shape"], info["streams"]
    rows = shape[0]
    cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    limit = 4 * rows * cols + 4 * rows + 8  # no stream is larger than the dense tensor or its rows
    read = {k: _unpack(tensors[f"{name}::{k}"], meta, limit) for k, meta in streams.items()}
    if info["encoding"] == "gaps":
        mask = _mask_from_gaps(read["counts"], read["gaps"], rows, cols)
    else:
        mask = np.unpackbits(read["bitmask"])[: rows * cols].astype(bool).reshape(rows, cols)
    values = read["values"].astype(np.float32)
    if len(values) != int(mask.sum()):
        raise ValueError("corrupt sparse file: value count does not match the nonzero count")
    if info["values"] == "int8":
        scales = read["scales"]
        if len(scales) != rows:
            raise ValueError("corrupt sparse file: one int8 scale per row expected")
        values = values * scales[np.nonzero(mask)[0]]
    matrix = np.zeros((rows, cols), dtype=np.float32)
    matrix[mask] = values
    return torch.from_numpy(matrix).reshape(shape)


def _decode(name: str, tensors: dict[str, Tensor], info: dict[str, Any]) -> Tensor:
    if "streams" in info:
        return _decode_quantized(name, tensors, info)
    shape = info["shape"]
    rows = shape[0]
    cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    values = tensors[f"{name}::values"]
    if info["encoding"] == "csr":
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            matrix = torch.sparse_csr_tensor(  # indices read from a file: check them (bad ones would crash)
                tensors[f"{name}::indptr"].long(), tensors[f"{name}::indices"].long(), values,
                size=(rows, cols), check_invariants=True,
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


def sparse_state(
    model: nn.Module, quantize: str = "none", compress: bool = True
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of the sparse file format (see module docstring); ``compress`` (zlib
    of the streams) applies to the quantized encodings only."""
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)}, not {quantize!r}")
    names = {id(p): n for n, p in model.named_parameters()}
    sparse_names = {names[id(w)] for w in prunable_weights(model)}
    tensors: dict[str, Tensor] = {}
    encodings: dict[str, Any] = {}
    for name, value in model.state_dict().items():
        if name in sparse_names:
            if quantize == "none":
                encoded, info = _encode(name, value)
            else:
                encoded, info = _encode_quantized(name, value, quantize, compress)
            tensors.update(encoded)
            encodings[name] = info
        else:
            tensors[name] = value.detach().cpu().contiguous()
    header = {"format": FORMAT, "architecture": architecture(model), "encodings": encodings}
    if quantize != "none":  # a v1 reader must refuse what it cannot decode
        header.update(format=FORMAT_QUANTIZED, quantize=quantize)
    return tensors, {METADATA_KEY: json.dumps(header, sort_keys=True)}


def to_bytes(model: nn.Module, quantize: str = "none", compress: bool = True) -> bytes:
    tensors, metadata = sparse_state(model, quantize, compress)
    return st_save(tensors, metadata=metadata)


def save_sparse(model: nn.Module, path: str | Path, quantize: str = "none", compress: bool = True) -> int:
    """Write the sparse safetensors file; returns its size in bytes."""
    data = to_bytes(model, quantize, compress)
    Path(path).write_bytes(data)
    return len(data)


def from_bytes(data: bytes) -> nn.Module:
    """Rebuild the model from a sparse safetensors file's bytes."""
    tensors = st_load(data)
    header = _header(_metadata(data))
    if header.get("format") not in (FORMAT, FORMAT_QUANTIZED):
        raise ValueError(f"not a {FORMAT} / {FORMAT_QUANTIZED} file (format {header.get('format')!r})")
    arch, encodings = header["architecture"], header["encodings"]
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


def _header(metadata: dict[str, str]) -> dict[str, Any]:
    """Format, architecture and encodings; files written before the single key hold them as
    three top-level keys, the last two JSON-encoded."""
    if METADATA_KEY in metadata:
        return json.loads(metadata[METADATA_KEY])
    if metadata.get("format") != FORMAT:
        return {"format": metadata.get("format")}
    return {"format": FORMAT, **{k: json.loads(metadata[k]) for k in ("architecture", "encodings")}}


def load_sparse(path: str | Path) -> nn.Module:
    return from_bytes(Path(path).read_bytes())


class FeatureMajorChain(nn.Module):
    """A run of ``Linear`` / ``BatchNorm1d`` / ``ReLU`` / ``Tanh`` / ``Dropout`` layers evaluated
    with the activations stored feature-major (``features x rows``).

    Why feature-major: a CSR product ``W @ H`` reads, for each nonzero ``w_ij``, row ``j`` of
    ``H``; with ``H`` feature-major that row holds feature ``j`` of every input row contiguously,
    so the kernel streams memory instead of gathering strided columns, and its output is already
    the next layer's input layout: one transpose in, one out, for the whole chain. Rows go through
    in blocks of ``block_rows`` so that a block's activations stay in cache. Layers at or below
    ``max_density`` are CSR, denser ones dense; eval-mode BatchNorm is folded into the preceding
    Linear (scaling its rows keeps its zeros) and Dropout is the identity.
    """

    def __init__(self, layers: list[nn.Module], max_density: float, block_rows: int = 128) -> None:
        super().__init__()
        self.block_rows = block_rows
        self.steps: list[str] = []  # "affine<i>" (buffers weight<i>, bias<i>), "relu", "tanh"
        n_affine = 0
        for layer in layers:
            if isinstance(layer, nn.Linear):
                weight = layer.weight.detach().clone()
                bias = torch.zeros(layer.out_features) if layer.bias is None else layer.bias.detach().clone()
                self.steps.append(f"affine{n_affine}")
                self._set_affine(n_affine, weight, bias)
                n_affine += 1
            elif isinstance(layer, nn.BatchNorm1d):
                scale = layer.running_var.add(layer.eps).rsqrt()
                shift = -layer.running_mean * scale
                if layer.affine:
                    scale, shift = scale * layer.weight.detach(), shift * layer.weight.detach() + layer.bias.detach()
                i = n_affine - 1
                weight, bias = getattr(self, f"weight{i}"), getattr(self, f"bias{i}").squeeze(1)
                self._set_affine(i, weight * scale[:, None], bias * scale + shift)
            elif isinstance(layer, nn.ReLU):
                self.steps.append("relu")
            elif isinstance(layer, nn.Tanh):
                self.steps.append("tanh")
            # nn.Dropout: the identity in evaluation
        for i in range(n_affine):
            weight = getattr(self, f"weight{i}")
            if density_of([weight]) <= max_density:
                self.register_buffer(f"weight{i}", _csr32(weight))

    def _set_affine(self, i: int, weight: Tensor, bias: Tensor) -> None:
        self.register_buffer(f"weight{i}", weight.contiguous())
        self.register_buffer(f"bias{i}", bias.reshape(-1, 1).contiguous())

    @property
    def sparse_layers(self) -> int:
        return sum(b.layout == torch.sparse_csr for n, b in self.named_buffers() if n.startswith("weight"))

    def _forward_block(self, x: Tensor) -> Tensor:
        h = x.t().contiguous()
        for step in self.steps:
            if step == "relu":
                h = h.relu_()
            elif step == "tanh":
                h = h.tanh_()
            else:
                i = step[len("affine"):]
                h = torch.addmm(getattr(self, f"bias{i}"), getattr(self, f"weight{i}"), h)
        return h.t()

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] <= self.block_rows:
            return self._forward_block(x).contiguous()
        return torch.cat([self._forward_block(x[i : i + self.block_rows]) for i in range(0, x.shape[0], self.block_rows)])


def _csr32(weight: Tensor) -> Tensor:
    """CSR with int32 indices: MKL's sparse kernels take them as they are (int64 ones are converted
    on every call; 5-15% slower on a 784x300 layer at 10% density)."""
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        csr = weight.to_sparse_csr()
        return torch.sparse_csr_tensor(
            csr.crow_indices().to(torch.int32), csr.col_indices().to(torch.int32), csr.values(), csr.shape,
            check_invariants=False,  # built from a valid CSR tensor
        )


_CHAINABLE = (nn.Linear, nn.ReLU, nn.Tanh, nn.Dropout)


def _chainable(layer: nn.Module, previous: nn.Module | None) -> bool:
    if isinstance(layer, nn.BatchNorm1d):  # foldable: eval statistics, right after a Linear
        return isinstance(previous, nn.Linear) and layer.track_running_stats
    return isinstance(layer, _CHAINABLE)


def to_sparse_inference(model: nn.Module, max_density: float = 0.3) -> nn.Module:
    """A copy of ``model`` for CPU inference in which every run of Linear (+ BatchNorm1d /
    activation / dropout) layers that holds a layer at or below ``max_density`` becomes one
    :class:`FeatureMajorChain` (CSR products); the rest (convolutions, dense-only runs) is kept."""
    source = copy.deepcopy(model).cpu().eval()

    def convert(seq: nn.Sequential) -> nn.Sequential:
        out: list[nn.Module] = []
        run: list[nn.Module] = []

        def flush() -> None:
            if any(isinstance(m, nn.Linear) and density_of([m.weight]) <= max_density for m in run):
                out.append(FeatureMajorChain(run, max_density))
            else:
                out.extend(run)
            run.clear()

        for layer in seq:
            if _chainable(layer, run[-1] if run else None) and (run or isinstance(layer, nn.Linear)):
                run.append(layer)
                continue
            flush()
            if isinstance(layer, nn.Linear):
                run.append(layer)
            else:
                swap(layer)
                out.append(layer)
        flush()
        converted = nn.Sequential(*out)
        converted.arch = getattr(seq, "arch", {})
        return converted

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.Sequential):
                setattr(module, name, convert(child))
            elif isinstance(child, nn.Linear) and density_of([child.weight]) <= max_density:
                setattr(module, name, FeatureMajorChain([child], max_density))
            else:
                swap(child)

    if isinstance(source, nn.Sequential):
        return convert(source).eval()
    swap(source)
    return source
