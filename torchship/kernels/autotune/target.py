"""What the harness tunes, in a form a fresh worker process can rebuild.

A *target* is a picklable recipe whose ``build()`` returns ``(bound, args, kwargs)`` inside a
worker: ``bound`` has ``config_space`` and ``compile(config) -> callable`` (the contract's
BoundKernel). :class:`KernelTarget` does this for a ``@ts.kernel`` defined at module level
(re-imported by module name or file path in the worker, arguments shipped as ``torch.save``
bytes and moved back to their device). Anything else (a kernel defined inside a function) is
tuned in-process through :class:`LocalTarget`, without crash isolation.

Also here: how outputs are compared (:func:`compare_outputs`), which every candidate must pass
against the reference before it may win.

Example:
    >>> import torch
    >>> compare_outputs(torch.ones(4), torch.ones(4)) is None
    True
    >>> "mismatch" in compare_outputs(torch.ones(4), torch.zeros(4))
    True
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import io
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: relative tolerance per dtype name when comparing a candidate with the reference output.
TOLERANCES = {
    "float64": 1e-6,
    "float32": 2e-3,
    "float16": 2e-2,
    "bfloat16": 3e-2,
    "float8_e4m3fn": 1.5e-1,
    "float8_e5m2": 2.5e-1,
}


class TargetError(RuntimeError):
    """The target cannot be rebuilt in a worker (kernel not importable, bad arguments...)."""


def _flatten(value: Any, prefix: str = "out") -> list[tuple[str, Any]]:
    if isinstance(value, (list, tuple)):
        items: list[tuple[str, Any]] = []
        for i, v in enumerate(value):
            items += _flatten(v, f"{prefix}[{i}]")
        return items
    if isinstance(value, dict):
        items = []
        for k in sorted(value, key=str):
            items += _flatten(value[k], f"{prefix}[{k!r}]")
        return items
    return [(prefix, value)]


def clone_args(value: Any) -> Any:
    """A copy of ``value`` with every tensor (also inside tuples, lists, dicts) cloned.

    Example:
        >>> import torch
        >>> x = torch.ones(2); clone_args((x, 1))[0] is x
        False
    """
    import torch

    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple):
        return tuple(clone_args(v) for v in value)
    if isinstance(value, list):
        return [clone_args(v) for v in value]
    if isinstance(value, dict):
        return {k: clone_args(v) for k, v in value.items()}
    return value


def poison_like(ref: Any) -> None:
    """Fill freed allocator blocks of the output sizes with NaN (or -1) so an output the
    candidate forgets to write holds garbage, not the previous run's correct answer.

    Example:
        >>> import torch
        >>> poison_like(torch.ones(4))  # returns nothing: it only dirties freed memory
    """
    import torch

    junk = []
    for _, t in _flatten(ref):
        if isinstance(t, torch.Tensor):
            fill = float("nan") if t.is_floating_point() else -1
            junk.append(torch.full_like(t, fill))
    del junk


#: elements compared at a time, so checking a multi-GB tensor needs only a few chunk-sized temps
_CHUNK = 1 << 24


def _chunks(a: Any, b: Any) -> Any:
    for start in range(0, b.numel(), _CHUNK):
        yield a[start : start + _CHUNK], b[start : start + _CHUNK]


def _compare_float(where: str, a: Any, b: Any, tol: float) -> str | None:
    """Compare flat floating tensors chunk by chunk (float64 per chunk): NaNs at the same
    places, equal infinities, then the relative norm error and every element within ``tol``.

    Example:
        >>> import torch
        >>> _compare_float("out", torch.ones(3), torch.ones(3) * 1.1, 1e-3).startswith("out")
        True
    """
    import torch

    if all(torch.equal(x, y) for x, y in _chunks(a, b)):
        return None
    nan_off, sq_b, count = 0, 0.0, 0
    for x, y in _chunks(a, b):
        x, y = x.double(), y.double()
        nan_x, nan_y = torch.isnan(x), torch.isnan(y)
        nan_off += int((nan_x ^ nan_y).sum())
        inf_y = torch.isinf(y)
        if not torch.equal(x[inf_y], y[inf_y]):
            return f"{where}: infinities differ from the reference"
        fin = ~(nan_y | inf_y)
        sq_b += float(y[fin].pow(2).sum())
        count += int(fin.sum())
    if nan_off:
        return f"{where}: NaN at {nan_off} places where the reference has none (or the reverse)"
    if count == 0:
        return None
    rms = (sq_b / count) ** 0.5
    sq_d, bad, max_diff = 0.0, 0, 0.0
    for x, y in _chunks(a, b):
        x, y = x.double(), y.double()
        fin = ~(torch.isnan(y) | torch.isinf(y))
        x, y = x[fin], y[fin]
        if y.numel() == 0:
            continue
        diff = (x - y).abs()
        sq_d += float(diff.pow(2).sum())
        max_diff = max(max_diff, float(diff.max()))
        bad += int((diff > tol * (y.abs() + rms) + 1e-30).sum())
    norm_err = sq_d**0.5 / max(sq_b**0.5, 1e-30)
    if norm_err > tol or bad:
        return (
            f"{where}: mismatch against the reference: relative error {norm_err:.3g} "
            f"(tolerance {tol:g}), {bad} of {b.numel()} elements off, max abs diff {max_diff:.3g}"
        )
    return None


def compare_outputs(out: Any, ref: Any, name: str = "out") -> str | None:
    """Return None when ``out`` matches ``ref`` (nested tensors / scalars), else why not.

    Floating tensors pass when the relative norm error and every element are within the
    dtype's tolerance (elements: ``|a-b| <= tol * (|b| + rms(b))``) and NaNs sit at the same
    places; other dtypes must be equal.

    Example:
        >>> import torch
        >>> compare_outputs([torch.ones(2)], [torch.ones(2) * 1.0001]) is None
        True
    """
    import torch

    a_items, b_items = _flatten(out, name), _flatten(ref, name)
    if len(a_items) != len(b_items):
        return f"{name}: {len(a_items)} outputs, reference has {len(b_items)}"
    for (where, a), (_, b) in zip(a_items, b_items):
        if isinstance(b, torch.Tensor):
            if not isinstance(a, torch.Tensor):
                return f"{where}: expected a tensor, got {type(a).__name__}"
            if a.shape != b.shape or a.dtype != b.dtype:
                return (
                    f"{where}: got {a.dtype} {tuple(a.shape)}, reference is "
                    f"{b.dtype} {tuple(b.shape)}"
                )
            if not (a.is_floating_point() or a.is_complex()):
                if not torch.equal(a, b):
                    bad = int((a != b).sum())
                    return f"{where}: {bad} of {b.numel()} elements mismatch (exact dtype)"
                continue
            tol = TOLERANCES.get(str(b.dtype).replace("torch.", ""), 2e-3)
            why = _compare_float(where, a.detach().reshape(-1), b.detach().reshape(-1), tol)
            if why is not None:
                return why
        elif isinstance(b, (int, float, bool)) and a != b and not (a != a and b != b):
            return f"{where}: got {a!r}, reference {b!r}"
    return None


@dataclass(frozen=True)
class TensorSpec:
    """Shape, dtype and strides of a floating tensor, standing in for its data where only a
    launch with the same specialisation is needed (compile workers).

    Example:
        >>> import torch
        >>> TensorSpec.of(torch.ones(2, 3).t()).materialize("cpu").stride()
        (1, 3)
    """

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str

    @classmethod
    def of(cls, t: Any) -> TensorSpec:
        return cls(tuple(t.shape), tuple(t.stride()), str(t.dtype).replace("torch.", ""))

    def materialize(self, device: Any) -> Any:
        """A tensor of this layout on ``device`` filled with standard-normal values."""
        import torch

        out = torch.empty_strided(self.shape, self.stride, dtype=getattr(torch, self.dtype),
                                  device=device or "cpu")
        return out.normal_() if out.numel() else out


def pack_args(
    args: tuple[Any, ...], kwargs: dict[str, Any], *, light: bool = False
) -> tuple[bytes, list[str | None]]:
    """Serialise arguments for a worker: tensors go to CPU; their devices are remembered.

    Example:
        >>> import torch
        >>> data, devices = pack_args((torch.ones(2), 3), {})
        >>> devices
        ['cpu', None]
    """
    import torch

    flat = list(args) + [kwargs[k] for k in sorted(kwargs)]
    devices = [str(x.device) if isinstance(x, torch.Tensor) else None for x in flat]

    def host(x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            return x
        if light and (x.is_floating_point() or x.is_complex()):
            return TensorSpec.of(x)  # layout only: integer data (indices) always travels
        return x.detach().cpu()

    cpu_args = tuple(host(x) for x in args)
    cpu_kwargs = {k: host(v) for k, v in kwargs.items()}
    buf = io.BytesIO()
    torch.save((cpu_args, cpu_kwargs), buf)
    return buf.getvalue(), devices


def unpack_args(data: bytes, devices: list[str | None]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Inverse of :func:`pack_args` (tensors return to their original devices).

    Example:
        >>> import torch
        >>> a, kw = unpack_args(*pack_args((torch.ones(2),), {"n": 1}))
        >>> a[0].tolist(), kw
        ([1.0, 1.0], {'n': 1})
    """
    import torch

    # our own bytes from the parent process, never a user file: full unpickling is safe here
    cpu_args, cpu_kwargs = torch.load(io.BytesIO(data), weights_only=False)
    n = len(cpu_args)
    def place(x: Any, dev: str | None) -> Any:
        if isinstance(x, TensorSpec):
            return x.materialize(dev)
        return x.to(dev) if isinstance(x, torch.Tensor) and dev else x

    args = tuple(place(x, devices[i]) for i, x in enumerate(cpu_args))
    kwargs = {k: place(cpu_kwargs[k], devices[n + j]) for j, k in enumerate(sorted(cpu_kwargs))}
    return args, kwargs


@dataclass(frozen=True)
class KernelRef:
    """Where to find a module-level kernel object again: module name, qualname, file.

    Example:
        >>> KernelRef("json", "dumps", None).load().__name__
        'dumps'
    """

    module: str
    qualname: str
    file: str | None

    @classmethod
    def of(cls, kernel: Any) -> KernelRef:
        """Locate ``kernel`` (a ``@ts.kernel`` object or plain function); TargetError if local.

        Example:
            >>> import json
            >>> KernelRef.of(json.dumps).qualname
            'dumps'
        """
        fn = kernel
        for attr in ("fn", "func", "__wrapped__"):
            inner = getattr(kernel, attr, None)
            if callable(inner) and hasattr(inner, "__qualname__"):
                fn = inner
                break
        module = getattr(fn, "__module__", None)
        qualname = getattr(fn, "__qualname__", None)
        if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
            raise TargetError(
                f"kernel {qualname or kernel!r} is not defined at module level, so a worker "
                "process cannot import it; define it at the top level of a module"
            )
        try:
            file = inspect.getsourcefile(fn)
        except TypeError:
            file = None
        return cls(module, qualname, file)

    def load(self) -> Any:
        """Import the module (by name, else from its file) and return the object."""
        mod = None
        if self.module != "__main__":
            try:
                mod = importlib.import_module(self.module)
            except ImportError:
                mod = None
        if mod is None:
            if not self.file or not Path(self.file).exists():
                raise TargetError(f"cannot import module {self.module!r} of {self.qualname}")
            name = "_torchship_user_" + hashlib.sha1(self.file.encode()).hexdigest()[:12]
            mod = sys.modules.get(name)
            if mod is None:
                spec = importlib.util.spec_from_file_location(name, self.file)
                if spec is None or spec.loader is None:
                    raise TargetError(f"cannot load {self.file}")
                mod = importlib.util.module_from_spec(spec)
                sys.modules[name] = mod
                spec.loader.exec_module(mod)
        obj: Any = mod
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        return obj


class Target:
    """Interface: ``build() -> (bound, args, kwargs)`` in the process that runs candidates.

    Example:
        >>> Target.isolatable
        True
    """

    isolatable = True
    device_type = "cpu"

    def build(self) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:  # pragma: no cover
        raise NotImplementedError

    def light(self) -> Target:
        """The target for compile workers (which only need a launch with the same layout):
        by default the target itself."""
        return self

    def payload(self) -> bytes:
        """The bytes a bench worker rebuilds this target from (``pickle.loads``)."""
        return pickle.dumps(self)

    def reference(self, bound: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run the reference (default: ``bound.config_space.default()``); returns outputs."""
        fn = bound.compile(bound.config_space.default())
        return fn(*args, **kwargs)


def call_bound(bound: Any, compiled: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Launch a compiled candidate (kept as a seam for kernels whose launcher wants kwargs)."""
    return compiled(*args, **kwargs)


class KernelTarget(Target):
    """A module-level ``@ts.kernel`` plus concrete arguments, rebuilt by re-import in workers.

    ``reference="default"`` compares candidates with the default config's output;
    ``"ref"`` with the eager reference mode (``torchship.kernels.ref``), slower but independent.

    Example:
        >>> KernelTarget.isolatable
        True
    """

    def __init__(
        self,
        kernel: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None = None,
        reference: str = "default",
    ) -> None:
        import torch

        self.ref = KernelRef.of(kernel)
        kwargs = dict(kwargs or {})
        # the live arguments stay here (never pickled); bytes are made only when needed
        self._args, self._kwargs = tuple(args), kwargs
        self.data: Any = None
        self._light_data, self.devices = pack_args(tuple(args), kwargs, light=True)
        self.reference_mode = reference
        tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
        self.device_type = tensors[0].device.type if tensors else "cpu"
        self._all_cuda = bool(tensors) and all(t.is_cuda for t in tensors)

    def build(self) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        kernel = self.ref.load()
        if isinstance(self.data, tuple):  # ("shared", args, kwargs): CUDA IPC views
            args, kwargs = self.data[1], self.data[2]
        elif self.data is None:  # in-process
            args, kwargs = self._args, self._kwargs
        else:
            args, kwargs = unpack_args(self.data, self.devices)
        return bind(kernel, args, kwargs), args, kwargs

    def payload(self) -> bytes:
        """What a bench worker rebuilds this target from. CUDA arguments travel as CUDA IPC
        handles (the worker maps the same device memory; it only ever runs on copies), so a
        multi-GB input costs no device-to-host copy and no serialisation; anything else, or
        when sharing fails, as ``torch.save`` bytes."""
        if self._all_cuda:
            import copy
            from multiprocessing.reduction import ForkingPickler

            import torch.multiprocessing  # noqa: F401 - registers the CUDA tensor reductions

            twin = copy.copy(self)
            twin.data = ("shared", self._args, self._kwargs)
            try:
                return bytes(ForkingPickler.dumps(twin))
            except Exception:  # noqa: BLE001 - no IPC here: fall back to bytes
                pass
        return pickle.dumps(self)

    def light(self) -> KernelTarget:
        """A copy whose floating arguments travel as layouts only (random data in the
        worker): compile workers launch once to compile, they check nothing, and shipping a
        multi-GB input to each of them would dominate a quick tune."""
        import copy

        twin = copy.copy(self)
        twin.data = self._light_data
        return twin

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_light_data"] = b""  # not needed in a worker
        state.pop("_args", None)
        state.pop("_kwargs", None)
        if state["data"] is None:
            state["data"], _ = pack_args(self._args, self._kwargs)
        return state

    def reference(self, bound: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.reference_mode == "ref":
            from torchship.kernels import ref

            fn = getattr(bound, "fn", None) or self.ref.load().fn
            return ref.run(fn, args, kwargs)
        return super().reference(bound, args, kwargs)


class LocalTarget(Target):
    """An already-bound kernel and its arguments, evaluated in this process (no isolation).

    Example:
        >>> LocalTarget(None, ()).isolatable
        False
    """

    isolatable = False

    def __init__(
        self, bound: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None
    ) -> None:
        self.bound, self.args, self.kwargs = bound, tuple(args), dict(kwargs or {})
        import torch

        tensors = [a for a in self.args if isinstance(a, torch.Tensor)]
        self.device_type = tensors[0].device.type if tensors else "cpu"

    def build(self) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        return self.bound, self.args, self.kwargs


def bind(kernel: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``kernel.bind(args)`` (passing kwargs when the kernel's bind takes them).

    Example:
        >>> class K:
        ...     def bind(self, args): return ("bound", args)
        >>> bind(K(), (1,), {})
        ('bound', (1,))
    """
    if kwargs:
        try:
            return kernel.bind(args, kwargs)
        except TypeError:
            return kernel.bind(tuple(args) + tuple(kwargs.values()))
    return kernel.bind(args)
