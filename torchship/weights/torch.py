"""torch adapter with the ``safetensors.torch`` API: save/save_file/load/load_file/save_model/load_model.

Saving streams each tensor straight from its storage (no intermediate bytes). Loading on CPU
returns views of a private (copy-on-write) mmap; loading to a GPU copies the data buffer in
chunks through pinned host buffers on a side stream, overlapping the host copy of one chunk
with the device copy of the previous one. Shared/tied tensors are handled as safetensors does:
``save_file`` refuses them, ``save_model`` keeps one name per shared group.

Example:
    >>> import torch, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "t.safetensors")
    >>> save_file({"w": torch.ones(2, 3)}, p)
    >>> load_file(p)["w"].shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import io
import os
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from torchship.weights import shards as _shards
from torchship.weights.format import TORCH_NAMES, Header, SafetensorError, SafetensorValueError
from torchship.weights.reader import check_backend, parse_bytes, safe_open
from torchship.weights.writer import Entry, save_entries, write_entries

__all__ = ["load", "load_file", "load_model", "save", "save_file", "save_model", "save_sharded", "safe_open",
           "storage_ptr", "storage_size"]

TORCH_DTYPES: dict[str, torch.dtype] = {
    k: getattr(torch, v) for k, v in TORCH_NAMES.items() if isinstance(getattr(torch, v, None), torch.dtype)
}
"""safetensors dtype name -> torch dtype (F4 is torch's packed ``float4_e2m1fn_x2``)."""
_FROM_TORCH = {v: k for k, v in TORCH_DTYPES.items()}

STAGING_CHUNK = 32 << 20
"""Bytes per pinned staging buffer for GPU loads."""
_STAGING: dict[Any, list[torch.Tensor]] = {}
_STAGING_LOCK = threading.Lock()


def normalize_device(device: Any, *, check: bool = False) -> torch.device:
    """``"cpu"``, ``"cuda:1"``, ``1`` or a ``torch.device`` -> ``torch.device`` (``None`` is the
    CPU, as in safetensors); with ``check``, a CUDA device on a machine without CUDA is a
    SafetensorError up front.

    Example:
        >>> normalize_device(0), normalize_device(None)
        (device(type='cuda', index=0), device(type='cpu'))
    """
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device("cuda", device) if isinstance(device, int) and not isinstance(device, bool) else torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SafetensorError(f"invalid device {device!r}: {exc}") from exc
    if check and dev.type == "cuda" and not torch.cuda.is_available():
        raise SafetensorError(f"device {device!r} requested but CUDA is not available to torch {torch.__version__}")
    return dev


def _storage_shape(key: str, dtype: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if dtype != "F4":
        return shape
    if not shape or shape[-1] % 2:
        raise SafetensorError(
            f"tensor {key!r}: F4 shape {list(shape)} needs an even last dimension to load as torch.float4_e2m1fn_x2"
        )
    return (*shape[:-1], shape[-1] // 2)


def _torch_dtype(key: str, dtype: str) -> torch.dtype:
    found = TORCH_DTYPES.get(dtype)
    if found is None:
        raise SafetensorError(f"tensor {key!r}: dtype {dtype} has no torch equivalent in torch {torch.__version__}")
    return found


def empty_tensor(key: str, shape: tuple[int, ...], dtype: torch.dtype, *, name: str = "<buffer>",
                 device: Any = "cpu") -> torch.Tensor:
    """A zero-size tensor of ``shape``; a dimension past torch's int64 range (valid in the
    format, whose dims are u64) is a SafetensorError naming the tensor, not torch's TypeError.

    Example:
        >>> empty_tensor("e", (0, 3), torch.float32).shape
        torch.Size([0, 3])
    """
    try:
        return torch.empty(shape, dtype=dtype, device=device)
    except (TypeError, RuntimeError, OverflowError) as exc:
        raise SafetensorError(f"{name}: tensor {key!r}: shape {list(shape)} cannot be a torch tensor "
                              f"({str(exc).splitlines()[0]})") from None


def cpu_view(buf: Any, header: Header, key: str, *, name: str = "<buffer>") -> torch.Tensor:
    """A CPU tensor viewing tensor ``key`` inside ``buf`` (no copy).

    Example:
        >>> buf, header, _ = parse_bytes(save({"x": torch.arange(3)}))
        >>> cpu_view(buf, header, "x").tolist()
        [0, 1, 2]
    """
    info = header.tensors[key]
    dtype = _torch_dtype(key, info.dtype)
    shape = _storage_shape(key, info.dtype, info.shape)
    if info.nbytes == 0:
        return empty_tensor(key, shape, dtype, name=name)
    count = info.nbytes // dtype.itemsize
    flat = torch.frombuffer(buf, dtype=dtype, count=count, offset=header.data_start + info.start)
    return flat.view(shape)


def _staging(device: torch.device, slots: int) -> list[torch.Tensor]:
    buffers = _STAGING.get(device)
    if buffers is None or len(buffers) != slots or buffers[0].numel() != STAGING_CHUNK:
        buffers = [torch.empty(STAGING_CHUNK, dtype=torch.uint8, pin_memory=True) for _ in range(slots)]
        _STAGING[device] = buffers
    return buffers


def load_to_device(
    buf: Any, header: Header, keys: Iterable[str], device: torch.device, *, name: str = "<buffer>"
) -> dict[str, torch.Tensor]:
    """Copy the whole data buffer to ``device`` through pinned staging buffers, then return
    per-tensor views of the device buffer (one allocation, aligned views, no per-tensor copy).

    Example:
        >>> load_to_device(buf, header, header.tensors, torch.device("cuda"))  # doctest: +SKIP
    """
    keys = list(keys)
    for key in keys:  # fail on unsupported dtypes before any device work
        _torch_dtype(key, header.tensors[key].dtype)
    total = header.data_len
    device_buf = torch.empty(total, dtype=torch.uint8, device=device)
    if total and device.type == "cuda":
        host = torch.frombuffer(buf, dtype=torch.uint8, count=total, offset=header.data_start)
        stream = torch.cuda.Stream(device)
        with _STAGING_LOCK, torch.cuda.device(device):  # the pinned buffers are shared
            staging = _staging(device, 2)
            done: list[Any] = [None] * len(staging)
            stream.wait_stream(torch.cuda.current_stream(device))  # device_buf was allocated there
            for i, start in enumerate(range(0, total, STAGING_CHUNK)):
                slot = i % len(staging)
                if done[slot] is not None:
                    done[slot].synchronize()  # the device copy that used this buffer has finished
                n = min(STAGING_CHUNK, total - start)
                staging[slot][:n].copy_(host[start : start + n])
                with torch.cuda.stream(stream):
                    device_buf[start : start + n].copy_(staging[slot][:n], non_blocking=True)
                    event = torch.cuda.Event()
                    event.record(stream)
                    done[slot] = event
            stream.synchronize()
    elif total:
        host = torch.frombuffer(buf, dtype=torch.uint8, count=total, offset=header.data_start)
        device_buf.copy_(host)
    result: dict[str, torch.Tensor] = {}
    for key in keys:
        info = header.tensors[key]
        dtype = _torch_dtype(key, info.dtype)
        shape = _storage_shape(key, info.dtype, info.shape)
        raw = device_buf[info.start : info.end]
        if info.nbytes == 0:
            result[key] = empty_tensor(key, shape, dtype, name=name, device=device)
        elif info.start % dtype.itemsize:
            result[key] = raw.clone().view(dtype).view(shape)  # misaligned: own storage
        else:
            result[key] = raw.view(dtype).view(shape)
    return result


# ---------------------------------------------------------------------------------------------
# saving


def _tensor_bytes(key: str, tensor: torch.Tensor) -> Any:
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    t = t.resolve_conj().resolve_neg()
    if not t.is_contiguous():
        t = t.contiguous()
    # contiguous allows any stride on a size-1 dimension (``x[::4][:1]`` keeps stride 4), which
    # ``view(torch.uint8)`` refuses; a contiguous tensor's elements are consecutive, so say so
    flat = t.as_strided((t.numel(),), (1,))
    return flat.view(torch.uint8).numpy()


def _entries(tensors: Mapping[str, torch.Tensor]) -> dict[str, Entry]:
    if not isinstance(tensors, Mapping):
        raise SafetensorValueError(f"expected a dict of str -> torch.Tensor, got {type(tensors).__name__}")
    entries: dict[str, Entry] = {}
    for key, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise SafetensorValueError(f"tensor {key!r}: expected a torch.Tensor, got {type(t).__name__}")
        if t.layout != torch.strided:
            raise SafetensorValueError(f"tensor {key!r}: {t.layout} tensors are not supported; call .to_dense() first")
        if t.device.type == "meta":
            raise SafetensorError(f"tensor {key!r}: a meta tensor has no data to save")
        dtype = _FROM_TORCH.get(t.dtype)
        if dtype is None:
            raise SafetensorError(f"tensor {key!r}: torch dtype {t.dtype} has no safetensors equivalent")
        shape = tuple(t.shape)
        if dtype == "F4":
            shape = (*shape[:-1], shape[-1] * 2) if shape else (2,)
        entries[key] = Entry(dtype, shape, lambda k=key, v=t: _tensor_bytes(k, v))
    return entries


def storage_ptr(tensor: torch.Tensor) -> int:
    """Address of the tensor's storage (0 for a meta tensor), as ``safetensors.torch.storage_ptr``
    (transformers imports it from there to find tied weights).

    Example:
        >>> w = torch.zeros(4)
        >>> storage_ptr(w[2:]) == storage_ptr(w) != 0
        True
    """
    return tensor.untyped_storage().data_ptr()


def storage_size(tensor: torch.Tensor) -> int:
    """Bytes in the tensor's whole storage, as ``safetensors.torch.storage_size``.

    Example:
        >>> storage_size(torch.zeros(4)[2:])
        16
    """
    return tensor.untyped_storage().nbytes()


def _storage_key(t: torch.Tensor) -> tuple[Any, int, int] | None:
    if t.device.type == "meta" or t.layout != torch.strided:
        return None
    ptr, size = storage_ptr(t), storage_size(t)
    if ptr == 0 or size == 0:
        return None
    return (t.device, ptr, size)


def find_shared_tensors(tensors: Mapping[str, torch.Tensor]) -> list[set[str]]:
    """Groups of names whose tensors overlap in memory (singletons for unshared tensors).

    Example:
        >>> w = torch.zeros(4)
        >>> [sorted(g) for g in find_shared_tensors({"a": w, "b": w, "c": torch.ones(1)})]
        [['a', 'b'], ['c']]
    """
    by_storage: dict[Any, list[str]] = defaultdict(list)
    for key, t in tensors.items():
        skey = _storage_key(t)
        if skey is not None:
            by_storage[skey].append(key)
    groups: list[set[str]] = []
    for names in by_storage.values():
        spans = []
        for key in names:
            t = tensors[key]
            start = t.storage_offset() * t.element_size()
            span = (t.numel() and max(1, sum((s - 1) * st for s, st in zip(t.shape, t.stride())) + 1)) * t.element_size()
            spans.append((start, start + span, key))
        spans.sort()
        current: set[str] = set()
        end = -1
        for s, e, key in spans:
            if current and s < end:
                current.add(key)
                end = max(end, e)
            else:
                if current:
                    groups.append(current)
                current, end = {key}, e
        if current:
            groups.append(current)
    return sorted(groups, key=lambda g: sorted(g))


def _covers_storage(t: torch.Tensor) -> bool:
    storage = t.untyped_storage()
    return t.data_ptr() == storage.data_ptr() and t.nbytes == storage.nbytes() and t.is_contiguous()


def dedupe_shared(
    state_dict: Mapping[str, torch.Tensor], preferred: Iterable[str] | None = None
) -> dict[str, list[str]]:
    """For each shared group, the name to keep -> the names to drop (safetensors' rule: keep a
    name whose tensor covers its whole storage, preferring ``preferred`` names, then the
    alphabetically first).

    Example:
        >>> w = torch.zeros(4)
        >>> dedupe_shared({"b": w, "a": w})
        {'a': ['b']}
    """
    preferred_set = set(preferred or ())
    plan: dict[str, list[str]] = {}
    for group in find_shared_tensors(state_dict):
        if len(group) < 2:
            continue
        complete = sorted(k for k in group if _covers_storage(state_dict[k]))
        if not complete:
            raise SafetensorError(
                f"tensors {sorted(group)} share memory but none covers the whole storage; "
                "save copies (.clone()) of them instead"
            )
        keep = complete[0]
        chosen = sorted(set(complete) & preferred_set)
        if chosen:
            keep = chosen[0]
        plan[keep] = sorted(group - {keep})
    return plan


def save(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialize tensors to safetensors bytes.

    Example:
        >>> len(save({"x": torch.zeros(2, dtype=torch.uint8)}))
        66
    """
    entries = _unshared_entries(tensors)
    buf = io.BytesIO()
    write_entries(buf, entries, metadata)
    return buf.getvalue()


def _unshared_entries(tensors: Mapping[str, torch.Tensor]) -> dict[str, Entry]:
    """Writer entries for ``tensors``, refusing tensors that share memory (as safetensors does)."""
    entries = _entries(tensors)
    shared = [sorted(g) for g in find_shared_tensors(tensors) if len(g) > 1]
    if shared:
        raise RuntimeError(
            f"Some tensors share memory, which would duplicate them on disk: {shared}. "
            "Use torchship.weights.torch.save_model, or save .clone()s."
        )
    return entries


def save_file(
    tensors: Mapping[str, torch.Tensor],
    filename: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    *,
    fsync: bool = True,
) -> None:
    """Save tensors to ``filename`` (streamed to a temp file, fsync'd, renamed).

    Example:
        >>> save_file({"w": torch.randn(3)}, "w.safetensors")  # doctest: +SKIP
    """
    entries = _unshared_entries(tensors)
    save_entries(entries, filename, metadata, fsync=fsync)


def save_sharded(
    tensors: Mapping[str, torch.Tensor],
    directory: str | os.PathLike[str],
    max_shard_size: int | str = "5GB",
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
    """Save tensors as ``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json``.

    Example:
        >>> save_sharded(model.state_dict(), "ckpt", "2GB")  # doctest: +SKIP
    """
    entries = _unshared_entries(tensors)
    return _shards.save_sharded(entries, directory, max_shard_size, metadata)


def load(data: bytes, device: Any = "cpu") -> dict[str, torch.Tensor]:
    """Load tensors from safetensors bytes (views of one private copy of ``data``).

    Example:
        >>> load(save({"x": torch.arange(2)}))["x"].tolist()
        [0, 1]
    """
    buf, header, keys = parse_bytes(data)
    dev = normalize_device(device, check=True)
    if dev.type != "cpu":
        return load_to_device(buf, header, keys, dev, name="<bytes>")
    return {key: cpu_view(buf, header, key, name="<bytes>") for key in keys}


def load_file(
    filename: str | os.PathLike[str], device: Any = "cpu", *, backend: str = "mmap"
) -> dict[str, torch.Tensor]:
    """Load every tensor of a file or a sharded checkpoint (directory or index file).

    ``backend`` (``"mmap"``/``"pread"``) is checked as safetensors checks it (see ``safe_open``).

    Example:
        >>> load_file("w.safetensors", device="cuda")  # doctest: +SKIP
    """
    check_backend(backend)
    return _shards.load_checkpoint(filename, "pt", device)


def save_model(
    model: torch.nn.Module,
    filename: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    force_contiguous: bool = True,
) -> None:
    """Save a module's state dict, storing tied/shared tensors once (dropped names are recorded
    in the metadata as ``dropped -> kept``, like safetensors).

    Example:
        >>> save_model(torch.nn.Linear(2, 2), "lin.safetensors")  # doctest: +SKIP
    """
    state_dict = dict(model.state_dict())
    meta = dict(metadata) if metadata is not None else None
    for kept, dropped in dedupe_shared(state_dict).items():
        for name in dropped:
            meta = {} if meta is None else meta
            meta.setdefault(name, kept)
            del state_dict[name]
    if force_contiguous:
        state_dict = {k: v.contiguous() for k, v in state_dict.items()}
    save_file(state_dict, filename, meta)


def load_model(
    model: torch.nn.Module,
    filename: str | os.PathLike[str],
    strict: bool = True,
    device: Any = "cpu",
    *,
    backend: str = "mmap",
) -> tuple[list[str], list[str]]:
    """Load a file into ``model``; return (missing, unexpected) keys, tied names accounted for.

    Example:
        >>> missing, unexpected = load_model(torch.nn.Linear(2, 2), "lin.safetensors")  # doctest: +SKIP
    """
    state_dict = load_file(filename, device=device, backend=backend)
    own = model.state_dict()
    plan = dedupe_shared(own, preferred=state_dict.keys())
    missing_list, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = set(missing_list)
    unexpected = list(unexpected)
    for dropped in plan.values():
        for name in dropped:
            if name in missing:
                missing.discard(name)
            else:
                unexpected.append(name)
    if strict and (missing or unexpected):
        raise RuntimeError(
            f"Error(s) in loading state_dict for {type(model).__name__}: "
            f"missing keys {sorted(missing)}, unexpected keys {sorted(unexpected)}"
        )
    return sorted(missing), unexpected
