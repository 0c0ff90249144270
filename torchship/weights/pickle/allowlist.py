"""The allowlist: the only globals a checkpoint may name, each implemented by our own code.

No allowlisted name is ever imported or called for real: ``collections.OrderedDict`` builds
our :class:`ODict`, ``torch._utils._rebuild_tensor_v2`` builds a :class:`TensorRef` (a record of
storage, offset, shape and stride), ``numpy.dtype`` builds a numpy dtype from a validated type
string, and so on. :func:`classify` is the scanner's policy for every other name: known code
runners are *dangerous*, anything else unknown is *suspicious*.

Example:
    >>> resolve("collections", "OrderedDict").call(())
    {}
    >>> classify("os", "system")[0]
    'dangerous'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torchship.weights.format import DTYPES, TORCH_NAMES
from torchship.weights.pickle.numpy_values import (
    NDARRAY,
    np_dtype,
    np_frombuffer,
    np_reconstruct,
    np_scalar,
)
from torchship.weights.pickle.values import as_int, check_hashable, int_tuple, short_repr
from torchship.weights.pickle.vm import Callable_, GlobalRef


@dataclass(frozen=True)
class TorchDtype:
    """A torch dtype by name, with its safetensors name (None: cannot be stored) and size.

    Example:
        >>> TORCH_DTYPES["bfloat16"].safetensors, TORCH_DTYPES["bfloat16"].itemsize
        ('BF16', 2)
    """

    name: str
    safetensors: str | None
    itemsize: int

    def __repr__(self) -> str:
        return f"torch.{self.name}"


def _dtypes() -> dict[str, TorchDtype]:
    # the storable ones come from the format's table; F4 is torch's packed float4_e2m1fn_x2
    # (two values a byte: the converter doubles its last dim in the safetensors shape)
    rows: list[tuple[str, str | None, int]] = [
        (torch_name, st, max(DTYPES[st].bits // 8, 1)) for st, torch_name in TORCH_NAMES.items()
    ]
    rows += [
        ("complex128", None, 16), ("complex32", None, 4),
        ("qint8", None, 1), ("quint8", None, 1), ("qint32", None, 4), ("quint4x2", None, 1),
        ("quint2x4", None, 1),
    ]
    table = {name: TorchDtype(name, st, size) for name, st, size in rows}
    aliases = {"float": "float32", "double": "float64", "half": "float16", "long": "int64",
               "int": "int32", "short": "int16", "cfloat": "complex64", "cdouble": "complex128",
               "chalf": "complex32"}
    for alias, target in aliases.items():
        table[alias] = table[target]
    return table


TORCH_DTYPES: dict[str, TorchDtype] = _dtypes()
"""Every torch dtype name a checkpoint may use (``GLOBAL torch <name>``)."""

STORAGE_TYPES: dict[str, str] = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
    "QInt8Storage": "qint8", "QUInt8Storage": "quint8", "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
}
"""Legacy ``torch.<X>Storage`` class names and the dtype of their elements."""


class StorageType(Callable_):
    """``torch.FloatStorage`` and friends: only a marker carrying the element dtype.

    Example:
        >>> resolve("torch", "HalfStorage").dtype.name
        'float16'
    """

    def __init__(self, qualname: str, dtype: TorchDtype) -> None:
        super().__init__(qualname)
        self.dtype = dtype


@dataclass(eq=False)
class StorageRef:
    """One storage record of a container: ``key`` names its bytes, ``numel`` elements of
    ``dtype``. ``source`` is the container object that can read them; ``base`` is the byte
    offset inside the record (legacy storage views).

    Example:
        >>> StorageRef("0", TORCH_DTYPES["float32"], 4, "cpu", None).nbytes
        16
    """

    key: str
    dtype: TorchDtype
    numel: int
    location: str
    source: Any
    base: int = 0

    @property
    def nbytes(self) -> int:
        """Size in bytes. Example: see class."""
        return self.numel * self.dtype.itemsize


@dataclass(eq=False)
class TensorRef:
    """A tensor as a view of a storage: element offset, shape and stride in ``dtype`` units.

    Example:
        >>> s = StorageRef("0", TORCH_DTYPES["float32"], 6, "cpu", None)
        >>> TensorRef(s, 0, (2, 3), (3, 1), s.dtype).is_contiguous()
        True
    """

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: TorchDtype
    requires_grad: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def numel(self) -> int:
        """Number of elements. Example: ``TensorRef(s, 0, (2, 3), (3, 1), d).numel == 6``."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    def is_contiguous(self) -> bool:
        """True when the elements are laid out row-major without gaps (size-1 dims ignored).

        Example:
            >>> s = StorageRef("0", TORCH_DTYPES["float32"], 6, "cpu", None)
            >>> TensorRef(s, 0, (3, 2), (1, 3), s.dtype).is_contiguous()
            False
        """
        expected = 1
        for size, stride in zip(reversed(self.shape), reversed(self.stride)):
            if size != 1 and stride != expected:
                return False
            expected *= size
        return True

    def key(self) -> tuple[Any, ...]:
        """Identity of the viewed bytes: tensors with equal keys are tied (same data).

        Example:
            >>> s = StorageRef("0", TORCH_DTYPES["float32"], 6, "cpu", None)
            >>> TensorRef(s, 0, (6,), (1,), s.dtype).key()[2:]
            (0, 0, (6,), (1,), 'float32')
        """
        return (id(self.storage.source), self.storage.key, self.storage.base, self.offset,
                self.shape, self.stride, self.dtype.name)


def make_tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: TorchDtype | None,
                requires_grad: Any = False) -> TensorRef:
    """Validate rebuild arguments and return a :class:`TensorRef` that stays in its storage.

    Example:
        >>> s = StorageRef("0", TORCH_DTYPES["int8"], 4, "cpu", None)
        >>> make_tensor(s, 1, (3,), (1,), None).numel
        3
    """
    if not isinstance(storage, StorageRef):
        raise TypeError(f"expected a storage, got {type(storage).__name__}")
    offset = as_int(offset, "storage offset")
    shape = int_tuple(size, "size")
    strides = int_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise ValueError(f"size {shape} and stride {strides} differ in length")
    if not isinstance(requires_grad, bool):
        raise TypeError("requires_grad must be a bool")
    dtype = dtype or storage.dtype
    if dtype.itemsize == 0:
        raise ValueError(f"dtype {dtype} has no element size")
    numel = 1
    for d in shape:
        numel *= d
    if numel:
        last = offset + sum((d - 1) * s for d, s in zip(shape, strides))
        if (last + 1) * dtype.itemsize > storage.nbytes:
            raise ValueError(f"view (offset {offset}, size {shape}, stride {strides}) reaches "
                             f"element {last} of a storage of {storage.nbytes} bytes")
    return TensorRef(storage, offset, shape, strides, dtype, requires_grad)


class _Fn(Callable_):
    def __init__(self, qualname: str, fn: Any) -> None:
        super().__init__(qualname)
        self.fn = fn

    def call(self, args: tuple[Any, ...]) -> Any:
        return self.fn(*args)


def _hooks_ok(hooks: Any) -> None:
    if not isinstance(hooks, dict) or hooks:
        raise ValueError("backward hooks must be an empty dict")


def _rebuild_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                hooks: Any, metadata: Any = None) -> TensorRef:
    _hooks_ok(hooks)
    return make_tensor(storage, offset, size, stride, None, requires_grad)


def _rebuild_v3(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                hooks: Any, dtype: Any, metadata: Any = None) -> TensorRef:
    _hooks_ok(hooks)
    if not isinstance(dtype, TorchDtype):
        raise TypeError(f"dtype must be a torch dtype, got {dtype!r}")
    return make_tensor(storage, offset, size, stride, dtype, requires_grad)


def _rebuild_v1(storage: Any, offset: Any, size: Any, stride: Any) -> TensorRef:
    return make_tensor(storage, offset, size, stride, None)


def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any, state: Any = None) -> Any:
    if not isinstance(data, TensorRef):
        raise TypeError(f"parameter data must be a tensor, got {type(data).__name__}")
    _hooks_ok(hooks)
    data.extra["parameter"] = True
    return data


TENSOR_TYPE = Callable_("torch.Tensor")
"""Marker for ``torch.Tensor``: accepted only as the type of ``_rebuild_from_type_v2``."""


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> TensorRef:
    # torch.save of a plain tensor that carries Python attributes (``t.tag = 1``): the tensor is
    # rebuilt by one of our functions; the attributes are not tensor data and are left out
    if new_type is not TENSOR_TYPE:
        raise TypeError(f"tensor subclass {short_repr(new_type)} is not supported (only torch.Tensor)")
    if not isinstance(func, _Fn) or func.fn not in (_rebuild_v1, _rebuild_v2, _rebuild_v3):
        raise TypeError(f"rebuild function {short_repr(func)} is not a torch._utils tensor rebuild")
    if not isinstance(args, tuple):
        raise TypeError("rebuild arguments must be a tuple")
    return func.call(args)


class ODict(dict):
    """Our OrderedDict: a dict (insertion-ordered) that accepts a data-only BUILD state such as
    the ``_metadata`` attribute of an ``nn.Module`` state dict.

    Example:
        >>> d = ODict(); d.setstate({"_metadata": {"": {"version": 1}}}); d.state
        {'_metadata': {'': {'version': 1}}}
    """

    state: Any = None

    def setstate(self, state: Any) -> None:
        """Record the attribute dict real pickle would assign. Example: see class."""
        if state is not None and not isinstance(state, dict):
            raise TypeError(f"OrderedDict state must be a dict, got {type(state).__name__}")
        self.state = state


def _ordered_dict(*args: Any) -> ODict:
    out = ODict()
    if args:
        if len(args) != 1 or not isinstance(args[0], list | tuple):
            raise TypeError("OrderedDict takes one list of pairs")
        for pair in args[0]:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise TypeError("OrderedDict items must be pairs")
            out[pair[0]] = pair[1]
    return out


def _counter(*args: Any) -> dict[Any, Any]:
    # collections.Counter pickles as Counter(dict_of_counts); its data is that dict
    if not args:
        return {}
    if len(args) != 1 or not isinstance(args[0], dict):
        raise TypeError("Counter takes one dict of counts")
    return dict(args[0])


def _size(*args: Any) -> tuple[int, ...]:
    if len(args) != 1:
        raise TypeError("torch.Size takes one tuple")
    return int_tuple(args[0], "torch.Size")


def _device(*args: Any) -> str:
    if not args or not isinstance(args[0], str) or len(args) > 2:
        raise TypeError("torch.device takes a string and an optional index")
    if len(args) == 2:
        return f"{args[0]}:{as_int(args[1], 'device index')}"
    return args[0]


def _encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise TypeError("_codecs.encode is allowed only as str -> bytes in latin1/utf-8")
    return text.encode(encoding, "strict")


def _from_iterable(kind: type) -> Any:
    def build(*args: Any) -> Any:
        if len(args) > 1:
            raise TypeError(f"{kind.__name__} takes at most one argument")
        if args and not isinstance(args[0], list | tuple | set | frozenset | bytes | str):
            raise TypeError(f"{kind.__name__} of a {type(args[0]).__name__}")
        if kind in (bytes, bytearray) and args and isinstance(args[0], str):
            raise TypeError(f"{kind.__name__} of a str needs an encoding")
        if kind in (set, frozenset) and args:
            for item in args[0]:
                check_hashable(item)
        return kind(*args)

    return build


def _complex(real: Any = 0.0, imag: Any = 0.0) -> complex:
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (real, imag)):
        raise TypeError("complex takes two numbers")
    return complex(real, imag)


# ---------------------------------------------------------------- the table

def _table() -> dict[tuple[str, str], Callable_]:
    t: dict[tuple[str, str], Callable_] = {}

    def add(module: str, name: str, fn: Any) -> None:
        t[(module, name)] = _Fn(f"{module}.{name}", fn)

    for mod in ("collections", "collections.__init__"):
        add(mod, "OrderedDict", _ordered_dict)
        add(mod, "Counter", _counter)
    add("torch._utils", "_rebuild_tensor_v2", _rebuild_v2)
    add("torch._utils", "_rebuild_tensor_v3", _rebuild_v3)
    add("torch._utils", "_rebuild_tensor", _rebuild_v1)
    add("torch._utils", "_rebuild_parameter", _rebuild_parameter)
    add("torch._utils", "_rebuild_parameter_with_state", _rebuild_parameter)
    add("torch._tensor", "_rebuild_from_type_v2", _rebuild_from_type_v2)
    t[("torch", "Tensor")] = TENSOR_TYPE
    add("torch", "Size", _size)
    add("torch", "device", _device)
    add("_codecs", "encode", _encode)
    for mod in ("builtins", "__builtin__"):
        add(mod, "set", _from_iterable(set))
        add(mod, "frozenset", _from_iterable(frozenset))
        add(mod, "bytearray", _from_iterable(bytearray))
        add(mod, "bytes", _from_iterable(bytes))
        add(mod, "complex", _complex)
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        add(mod, "_reconstruct", np_reconstruct)
        add(mod, "scalar", np_scalar)
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        add(mod, "_frombuffer", np_frombuffer)
    add("numpy", "dtype", np_dtype)
    t[("numpy", "ndarray")] = NDARRAY
    for name, dtype_name in STORAGE_TYPES.items():
        for mod in ("torch", "torch.cuda"):
            t[(mod, name)] = StorageType(f"{mod}.{name}", TORCH_DTYPES[dtype_name])
    for name, dtype_name in STORAGE_TYPES.items():  # legacy tensor type names (tar format)
        tname = name.replace("Storage", "Tensor")
        for mod in ("torch", "torch.cuda"):
            t[(mod, tname)] = StorageType(f"{mod}.{tname}", TORCH_DTYPES[dtype_name])
    t[("torch.storage", "UntypedStorage")] = StorageType("torch.storage.UntypedStorage",
                                                         TORCH_DTYPES["uint8"])
    return t


_TABLE = _table()


def resolve(module: str, name: str) -> Any:
    """Our implementation of an allowlisted global, or None for anything else.

    Example:
        >>> resolve("torch", "bfloat16"), resolve("os", "system")
        (torch.bfloat16, None)
    """
    if module == "torch" and name in TORCH_DTYPES:
        return TORCH_DTYPES[name]
    return _TABLE.get((module, name))


ALLOWED_NAMES: tuple[str, ...] = tuple(sorted({f"{m}.{n}" for m, n in _TABLE}
                                               | {f"torch.{n}" for n in TORCH_DTYPES}))
"""Every allowlisted dotted name (for docs and reports)."""

# ---------------------------------------------------------------- scanner policy

_DANGEROUS_MODULES: dict[str, str] = {
    "os": "operating-system calls (processes, files)", "posix": "operating-system calls",
    "nt": "operating-system calls", "subprocess": "runs programs", "pty": "spawns a shell",
    "sys": "interpreter internals", "runpy": "runs Python modules", "pip": "installs packages",
    "importlib": "imports arbitrary modules", "pkgutil": "resolves and imports any name",
    "ctypes": "calls native code", "_ctypes": "calls native code", "marshal": "loads code objects",
    "types": "builds functions and code objects", "code": "runs Python source",
    "codeop": "compiles Python source", "webbrowser": "opens URLs / runs a browser",
    "shutil": "copies and deletes files", "socket": "network access", "_socket": "network access",
    "pickle": "nested unpickling", "_pickle": "nested unpickling", "dill": "nested unpickling",
    "cloudpickle": "nested unpickling", "joblib": "nested unpickling", "shelve": "nested unpickling",
    "multiprocessing": "starts processes", "threading": "starts threads", "_thread": "starts threads",
    "asyncio": "runs subprocesses and network I/O", "signal": "process signals",
    "platform": "runs programs", "pdb": "runs the debugger", "bdb": "runs the debugger",
    "timeit": "runs Python source", "cProfile": "runs Python source", "profile": "runs Python source",
    "trace": "runs Python source", "doctest": "runs Python source", "pydoc": "imports any name / runs a pager",
    "zipimport": "imports code", "imp": "imports code", "site": "imports code", "ensurepip": "installs packages",
    "venv": "creates environments", "setuptools": "runs build code", "distutils": "runs build code",
    "requests": "network access", "urllib": "network access", "http": "network access",
    "httplib": "network access", "ftplib": "network access", "smtplib": "network access",
    "telnetlib": "network access", "xmlrpc": "network access", "glob": "reads the file system",
    "tempfile": "creates files", "io": "opens files", "_io": "opens files", "fileinput": "opens files",
    "linecache": "reads files", "operator": "gets attributes / calls methods on objects",
    "functools": "wraps arbitrary callables", "commands": "runs shell commands", "popen2": "runs programs",
    "idlelib": "runs Python source", "lib2to3": "runs code", "numpy.testing": "runs Python source",
    "torch.hub": "downloads and runs code", "torch.jit": "loads TorchScript", "torch.serialization": "nested torch.load",
    "torch._dynamo": "compiles and runs code", "torch._inductor": "compiles and runs code",
    "torch.utils.cpp_extension": "compiles native code", "torch._C": "native internals",
}

_DANGEROUS_BUILTINS = {
    "eval", "exec", "execfile", "compile", "open", "file", "getattr", "setattr", "delattr",
    "__import__", "globals", "locals", "vars", "breakpoint", "input", "apply", "reload",
    "memoryview", "help", "exit", "quit", "object", "type", "super", "classmethod",
    "staticmethod", "property", "print", "dir", "id", "hasattr", "callable", "map", "filter",
}


TORCH_UNSTORABLE: dict[str, str] = {
    "torch._utils._rebuild_sparse_tensor":
        "a sparse tensor, which safetensors cannot store (save t.to_dense() instead)",
    "torch.serialization._get_layout":
        "the layout of a sparse tensor, which safetensors cannot store (save t.to_dense() instead)",
    "torch._utils._rebuild_qtensor":
        "a quantized tensor, which safetensors cannot store (save t.dequantize(), or "
        "t.int_repr() with its scales and zero points)",
    **{f"torch.{scheme}": "the scheme of a quantized tensor, which safetensors cannot store "
       "(save t.dequantize(), or t.int_repr() with its scales and zero points)"
       for scheme in ("per_tensor_affine", "per_channel_affine", "per_channel_affine_float_qparams",
                      "per_tensor_symmetric", "per_channel_symmetric")},
    "torch._utils._rebuild_meta_tensor_no_storage": "a meta tensor, which has no data to store",
    "torch._utils._rebuild_nested_tensor":
        "a nested (ragged) tensor, which safetensors cannot store (save its components)",
}
"""Data-only constructors on ``torch.load(weights_only=True)``'s allowlist whose result has no
safetensors form: nothing in them runs code (the scanner calls them suspicious, never
dangerous), and ``convert`` refuses them with this reason."""


def unstorable(qualname: str) -> str | None:
    """Why ``convert`` refuses the torch data constructor ``qualname``, or None.

    Example:
        >>> unstorable("torch._utils._rebuild_meta_tensor_no_storage")
        'a meta tensor, which has no data to store'
    """
    return TORCH_UNSTORABLE.get(qualname)


def classify(module: str, name: str) -> tuple[str, str]:
    """The scanner's verdict for one global: (safe | suspicious | dangerous, why).

    Example:
        >>> classify("torch._utils", "_rebuild_tensor_v2")[0], classify("mypkg.model", "Net")[0]
        ('safe', 'suspicious')
        >>> classify("builtins", "eval")
        ('dangerous', 'builtins.eval runs or reaches arbitrary code')
    """
    if resolve(module, name) is not None:
        return "safe", "data-only constructor on the allowlist (rebuilt by torchship's own code)"
    if f"{module}.{name}" in TORCH_UNSTORABLE:  # before the module rule: torch.serialization
        return "suspicious", ("torch data-only constructor (torch.load(weights_only=True) allows "
                              f"it), not on our allowlist: builds {TORCH_UNSTORABLE[f'{module}.{name}']}")
    if module in ("builtins", "__builtin__", "__builtins__"):
        if name in _DANGEROUS_BUILTINS or name.startswith("_"):
            return "dangerous", f"{module}.{name} runs or reaches arbitrary code"
        return "suspicious", f"builtin {name} is not a data constructor torchship knows"
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in _DANGEROUS_MODULES:
            return "dangerous", f"{module}.{name}: {_DANGEROUS_MODULES[prefix]}"
    if name in ("system", "popen", "exec", "eval", "execv", "spawn", "run", "call", "Popen",
                "check_output", "load", "loads", "__import__", "import_module", "getattr"):
        return "dangerous", f"{module}.{name}: a name used to run code or nested loads"
    if module == "copyreg" and name.startswith("extension["):
        return "dangerous", "extension code: resolves to any global through the copyreg registry"
    if module.startswith("<"):
        return "suspicious", f"{module}.{name}: cannot be resolved statically"
    return "suspicious", (f"{module}.{name} is not on the allowlist: loading would import "
                          f"{module} and build an arbitrary object")


def skippable(ref: GlobalRef) -> bool:
    """Whether ``convert(strict=False)`` may keep an object of class ``ref`` as a placeholder
    (reported, never built) instead of refusing: a class the scanner calls suspicious, not a
    global that runs code, not a torch tensor type we refuse for its own reason.

    Example:
        >>> skippable(GlobalRef("argparse", "Namespace", 0, "GLOBAL"))
        True
        >>> skippable(GlobalRef("os", "system", 0, "GLOBAL"))
        False
    """
    verdict, _ = classify(ref.module, ref.name)
    return (verdict == "suspicious" and unstorable(ref.qualname) is None
            and not ref.module.startswith("<"))
