"""Training state (nested dicts of tensors, numbers, strings) to one safetensors file, and back.

Resume files hold optimiser states, RNG states, replay buffers and counters. ``torch.save`` would
write them as a pickle, and reading a pickle runs whatever code it names, so a checkpoint copied
from somewhere else could run code on load. Here every tensor goes into a safetensors file and the
structure around the tensors (dict keys, which may be ints as in optimiser states; lists; tuples;
plain values) into that file's JSON metadata. Loading reads data only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

_SKELETON = "tmrl_vla_state"  # the metadata key holding the structure


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        name = str(len(tensors))
        # a copy: safetensors refuses tensors that share memory (views of one replay array)
        tensors[name] = obj.detach().cpu().clone().contiguous()
        return {"tensor": name}
    if isinstance(obj, np.ndarray):
        # torch lacks most unsigned types (numpy's RNG state is uint32): stored widened, restored exactly
        wide = obj.astype(np.int64) if obj.dtype.kind == "u" and obj.dtype != np.uint8 else obj
        return {"ndarray": _encode(torch.from_numpy(np.ascontiguousarray(wide)), tensors), "dtype": obj.dtype.str}
    if isinstance(obj, dict):
        return {"dict": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"tuple": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a training state: use tensors, numbers, strings, dicts")


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, list):
        return [_decode(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    if "tensor" in node:
        return tensors[node["tensor"]]
    if "ndarray" in node:
        return _decode(node["ndarray"], tensors).numpy().astype(np.dtype(node["dtype"]))
    if "tuple" in node:
        return tuple(_decode(v, tensors) for v in node["tuple"])
    return {_decode(k, tensors): _decode(v, tensors) for k, v in node["dict"]}


def save_state(state: Any, path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically (a crash mid-write leaves the previous file intact)."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(state, tensors)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={_SKELETON: json.dumps(skeleton)})
    os.replace(tmp, path)


def load_state(path: str | Path) -> Any:
    """Read what :func:`save_state` wrote (on the CPU)."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        metadata = f.metadata() or {}
        if _SKELETON not in metadata:
            raise ValueError(f"{path} is not a training state written by tmrl_vla (no {_SKELETON} metadata)")
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    return _decode(json.loads(metadata[_SKELETON]), tensors)
