"""From a loaded checkpoint tree to named tensors: flatten, deduplicate, read bytes lazily.

:func:`flatten` walks the value our pickle machine built (dicts, lists, :class:`TensorRef`,
numpy arrays, plain values) into dotted names: tensors on one side, JSON-able values on the
other (anything else is reported as dropped). Cycles and runaway sharing are bounded.
:func:`tensor_bytes` reads one tensor's bytes from its container: a contiguous view is one
ranged read, a strided view reads its span and gathers it, big-endian storages are
byte-swapped. :func:`dedupe` folds tied tensors (identical views) into one name, recording the
others the way ``safetensors.torch.save_model`` does (``metadata[removed] = kept``).

Example:
    >>> flat = flatten({"model": {"w": 1}, "epoch": 3})
    >>> flat.tensors, flat.values
    ({}, {'model': '{"w": 1}', 'epoch': '3'})
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from torchship.weights.pickle.allowlist import StorageRef, TensorRef, TorchDtype
from torchship.weights.pickle.numpy_values import NumpyArray
from torchship.weights.pickle.vm import Opaque

MAX_NODES = 1 << 22
MAX_DEPTH = 200
MAX_VALUE_BYTES = 64 << 10


class RebuildError(ValueError):
    """A tensor or value cannot be turned into safetensors data (message names it).

    Example:
        >>> str(RebuildError("w: complex128 has no safetensors dtype"))
        'w: complex128 has no safetensors dtype'
    """


@dataclass
class Flat:
    """Result of :func:`flatten`. Example: ``Flat().tensors == {}``."""

    tensors: dict[str, Any] = field(default_factory=dict)  # name -> TensorRef | np.ndarray
    values: dict[str, str] = field(default_factory=dict)  # name -> JSON text
    dropped: dict[str, str] = field(default_factory=dict)  # name -> why
    objects: dict[str, str] = field(default_factory=dict)  # name -> class of a skipped object


def _jsonable(value: Any, depth: int = 0) -> Any:
    if depth > 64:
        raise ValueError("nested too deeply")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return repr(value)
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(v, depth + 1) for v in value), key=repr)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, complex):
        return [value.real, value.imag]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, TorchDtype):
        return repr(value)  # "torch.bfloat16", as hyper-parameters print it
    if isinstance(value, Opaque):
        raise ValueError(f"holds a {value.class_name()} object, which convert does not build")
    raise ValueError(f"a {type(value).__name__} has no JSON form")


def _count_node(budget: list[int], depth: int) -> None:
    """Charge one visited node to the walk's bounds (depth and total node count)."""
    if depth > MAX_DEPTH:
        raise RebuildError(f"checkpoint structure nests deeper than {MAX_DEPTH} levels")
    budget[0] -= 1
    if budget[0] < 0:
        raise RebuildError(f"checkpoint structure has more than {MAX_NODES} nodes")


def _has_tensor(value: Any, budget: list[int], path: set[int], depth: int = 0) -> bool:
    _count_node(budget, depth)
    if isinstance(value, TensorRef | StorageRef):
        return True
    if isinstance(value, NumpyArray):
        return isinstance(value.array, np.ndarray)
    if isinstance(value, dict | list | tuple):
        if id(value) in path:
            return False
        path.add(id(value))
        items = value.values() if isinstance(value, dict) else value
        found = any(_has_tensor(v, budget, path, depth + 1) for v in items)
        path.discard(id(value))
        return found
    if isinstance(value, Opaque):
        return _has_tensor([value.args, value.state, value.contents], budget, path, depth + 1)
    return False


def module_tensors(node: Opaque) -> dict[str, Any] | None:
    """The ``state_dict`` entries of a pickled ``nn.Module`` (``torch.save(model)``), read from
    the ``__dict__`` its BUILD carries: ``_parameters`` (None entries left out), ``_buffers``
    minus ``_non_persistent_buffers_set``, and each child of ``_modules`` under its name; None
    when ``node`` does not carry a module's state. Nothing of the class is imported or run.

    Example:
        >>> from torchship.weights.pickle.decoder import GlobalRef
        >>> m = Opaque(GlobalRef("torch.nn", "Linear", 0, "GLOBAL"), "instantiate")
        >>> m.state = {"_parameters": {"weight": 1, "bias": None}, "_buffers": {}, "_modules": {}}
        >>> module_tensors(m)
        {'weight': 1}
    """
    state = node.state
    if not isinstance(state, dict) or not all(
            isinstance(state.get(k), dict) for k in ("_parameters", "_buffers", "_modules")):
        return None
    skip = state.get("_non_persistent_buffers_set") or set()
    out: dict[str, Any] = {k: v for k, v in state["_parameters"].items() if v is not None}
    out.update((k, v) for k, v in state["_buffers"].items() if v is not None and k not in skip)
    out.update((k, v) for k, v in state["_modules"].items() if v is not None)
    return out


def flatten(value: Any, prefix: str = "") -> Flat:
    """Split a checkpoint tree into dotted tensor names and JSON metadata values.

    Example:
        >>> flatten([1, {"a": "x"}]).values
        {'value': '[1, {"a": "x"}]'}
    """
    out = Flat()
    budget = [MAX_NODES]
    path: set[int] = set()

    def leaf(name: str, node: Any, record: bool = True) -> bool:
        name = name or "value"
        try:
            text = json.dumps(_jsonable(node), ensure_ascii=False)
        except (ValueError, TypeError, RecursionError) as exc:
            if record:
                out.dropped[name] = str(exc)
            return False
        if len(text) > MAX_VALUE_BYTES:
            if record:
                out.dropped[name] = f"JSON form is {len(text)} bytes, over {MAX_VALUE_BYTES}"
            return False
        out.values[name] = text
        return True

    def opaque(name: str, node: Opaque, depth: int, submodule: bool = False) -> None:
        cls = node.class_name()
        out.objects[name or "value"] = cls
        parts = module_tensors(node)
        if parts is not None:
            if not submodule:  # one line per pickled model, not per layer
                out.dropped[name or "value"] = (
                    f"a {cls} object (torch.save of a module): its parameters and buffers are "
                    "kept under their state_dict names; the module itself is not built")
            for key, child in parts.items():
                child_name = f"{name}.{key}" if name else str(key)
                if isinstance(child, Opaque):
                    _count_node(budget, depth + 1)
                    opaque(child_name, child, depth + 1, submodule=True)
                else:
                    walk(child_name, child, depth + 1)
        elif _has_tensor(node, [MAX_NODES], set()):
            raise RebuildError(f"{name or 'the checkpoint'}: tensors inside an object of class {cls}; "
                               f"convert does not build {cls}, so it cannot tell what they are "
                               "(save them in a dict, e.g. a state_dict)")
        else:
            out.dropped[name or "value"] = (f"skipped: an object built by {cls} (loading it "
                                            f"would import {cls}; nothing was run)")

    def walk(name: str, node: Any, depth: int) -> None:
        _count_node(budget, depth)
        if isinstance(node, Opaque):
            opaque(name, node, depth)
            return
        if isinstance(node, TensorRef):
            out.tensors[name or "tensor"] = node
            return
        if isinstance(node, StorageRef):
            out.tensors[name or "storage"] = TensorRef(node, 0, (node.numel,), (1,), node.dtype)
            return
        if isinstance(node, NumpyArray):
            if isinstance(node.array, np.ndarray) and node.array.dtype.kind in "biufc":
                out.tensors[name or "array"] = node.array
            else:
                leaf(name, node.array if isinstance(node.array, np.ndarray) else node.array)
            return
        if isinstance(node, dict | list | tuple):
            if id(node) in path:
                out.dropped[name or "value"] = "refers back to itself (cycle)"
                return
            # a tensor-free subtree is one JSON value; if that fails, a dict is split into its
            # entries (so one bad leaf does not drop its siblings), a list is dropped
            is_dict = isinstance(node, dict)
            top_dict = is_dict and not name  # a checkpoint's own keys are always kept apart
            if not top_dict and not _has_tensor(node, [MAX_NODES], set()) and (
                    leaf(name, node, record=not is_dict) or not is_dict):
                return
            path.add(id(node))
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in items:
                if not isinstance(key, str | int) or isinstance(key, bool):
                    out.dropped[f"{name}[{key!r}]"] = "key is not a string or int"
                    continue
                walk(f"{name}.{key}" if name else str(key), child, depth + 1)
            path.discard(id(node))
            return
        leaf(name, node)

    walk(prefix, value, 0)
    return out


def dedupe(tensors: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Keep one name per set of identical views; return (kept tensors, removed -> kept).

    Example:
        >>> from torchship.weights.pickle.allowlist import TORCH_DTYPES
        >>> s = StorageRef("0", TORCH_DTYPES["float32"], 4, "cpu", None)
        >>> a = TensorRef(s, 0, (4,), (1,), s.dtype); b = TensorRef(s, 0, (4,), (1,), s.dtype)
        >>> dedupe({"lm_head.weight": a, "embed.weight": b})[1]
        {'lm_head.weight': 'embed.weight'}
    """
    groups: dict[Any, list[str]] = {}
    for name, t in tensors.items():
        key = t.key() if isinstance(t, TensorRef) else ("np", id(t))
        groups.setdefault(key, []).append(name)
    kept: dict[str, Any] = {}
    removed: dict[str, str] = {}
    for names in groups.values():
        first = sorted(names)[0]
        for n in names:
            if n != first:
                removed[n] = first
    for name, t in tensors.items():
        if name not in removed:
            kept[name] = t
    return kept, removed


def safetensors_dtype(name: str, t: Any) -> str:
    """The safetensors dtype name for a TensorRef or numpy array, or a clear error.

    Example:
        >>> safetensors_dtype("x", np.zeros(2, np.int16))
        'I16'
    """
    if isinstance(t, np.ndarray):
        from torchship.weights.format import SafetensorError, dtype_from_numpy

        try:
            return dtype_from_numpy(t.dtype, name=name)
        except SafetensorError as exc:
            raise RebuildError(str(exc)) from None
    if t.dtype.safetensors is None:
        raise RebuildError(f"tensor {name!r}: torch.{t.dtype.name} has no safetensors dtype")
    return t.dtype.safetensors


def safetensors_shape(name: str, t: Any, dtype: str) -> tuple[int, ...]:
    """The tensor's shape in the safetensors header: torch's packed ``float4_e2m1fn_x2`` holds
    two F4 values a byte, so its last dimension doubles (as safetensors writes it).

    Example:
        >>> safetensors_shape("x", np.zeros((2, 3), np.uint8), "U8")
        (2, 3)
    """
    shape = tuple(int(d) for d in t.shape)
    if dtype != "F4":
        return shape
    if not shape:
        raise RebuildError(f"tensor {name!r}: a 0-d torch.float4_e2m1fn_x2 (two values) has no "
                           "safetensors shape")
    return (*shape[:-1], 2 * shape[-1])


def _swap(raw: Any, t: TensorRef) -> Any:
    unit = t.dtype.itemsize // 2 if t.dtype.name.startswith("complex") else t.dtype.itemsize
    if unit <= 1:
        return raw
    return np.frombuffer(raw, dtype=f"<u{unit}").byteswap()


def tensor_bytes(t: Any, container: Any = None) -> Any:
    """The tensor's C-contiguous little-endian bytes (bytes or a numpy array), read now.

    Example:
        >>> tensor_bytes(np.arange(3, dtype=">i2")).tolist()
        [0, 1, 2]
    """
    if isinstance(t, np.ndarray):
        return np.ascontiguousarray(t.astype(t.dtype.newbyteorder("<"), copy=False))
    container = container or t.storage.source
    size = t.dtype.itemsize
    n = t.numel
    if n == 0:
        return b""
    if t.is_contiguous():
        raw: Any = container.read(t.storage, t.offset * size, n * size)
    else:
        last = t.offset + sum((d - 1) * s for d, s in zip(t.shape, t.stride))
        span = container.read(t.storage, t.offset * size, (last - t.offset + 1) * size)
        elems = np.frombuffer(span, dtype=np.dtype((np.void, size)))
        view = np.lib.stride_tricks.as_strided(
            elems, shape=t.shape, strides=tuple(s * size for s in t.stride), writeable=False)
        raw = np.ascontiguousarray(view).reshape(-1).view(np.uint8)
    if container.byteorder == "big":
        raw = _swap(raw, t)
    return raw


def lazy_bytes(t: Any, on_read: Callable[[Any], None] | None = None) -> Callable[[], Any]:
    """A zero-argument callable for the writer: reads the tensor only when called.

    Example:
        >>> lazy_bytes(np.ones(2, np.uint8))().tolist()
        [1, 1]
    """

    def read() -> Any:
        data = tensor_bytes(t)
        if on_read is not None:
            on_read(data)
        return data

    return read
