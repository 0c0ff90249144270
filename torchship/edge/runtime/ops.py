"""Core ops, part 1: elementwise, reductions, shape and data movement (numpy kernels).

Semantics are those of docs/edge-ops.md; shapes are row-major contiguous; broadcasting follows
numpy. Every kernel writes into preallocated outputs.

Example:
    >>> import numpy as np
    >>> out = np.empty(3, np.float32)
    >>> OPS["add"].kernel([np.ones(3, np.float32), np.ones(3, np.float32)], [out], {})
    >>> out.tolist()
    [2.0, 2.0, 2.0]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from torchship.edge.runtime.dims import DTYPES, FLOATS, ProgramError
from torchship.edge.runtime.registry import OPS, Shape, register, required

R = required()


def _fail(msg: str) -> None:
    raise ProgramError(msg)


def _axis(axis: int, ndim: int) -> int:
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        _fail(f"axis {axis} out of range for rank {ndim}")
    return axis % max(ndim, 1)


def _bcast(shapes: list[Shape]) -> Shape:
    rank = max(len(s) for s in shapes)
    out = [1] * rank
    for s in shapes:
        off = rank - len(s)
        for i, d in enumerate(s):
            cur = out[off + i]
            if d != cur:
                if cur == 1:
                    out[off + i] = d
                elif d != 1:
                    _fail(f"shapes {list(shapes)} do not broadcast")
    return tuple(out)


def _same_dtype(dtypes: list[str], allowed: tuple[str, ...] | None = None) -> str:
    if len(set(dtypes)) != 1:
        _fail(f"inputs must share one dtype, got {dtypes}")
    if allowed is not None and dtypes[0] not in allowed:
        _fail(f"dtype {dtypes[0]} not supported (expected one of {list(allowed)})")
    return dtypes[0]


# --------------------------------------------------------------------------- elementwise

_NUMERIC = ("F32", "F64", "I64", "I32", "I8", "U8")
_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "pow": np.power,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "atan2": np.arctan2,
}
_COMPARE = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal}
_LOGICAL = {"logical_and": np.logical_and, "logical_or": np.logical_or}


def _binary_infer(allowed: tuple[str, ...], result: str | None) -> Any:
    def infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
        dt = _same_dtype(dtypes, allowed)
        check_clamp(a, dt)
        return [(_bcast(shapes), result or dt)]

    return infer


# fused output clamp (linear, conv2d, add): y = min(max(op(...), clamp_min), clamp_max)
CLAMP_ATTRS: dict[str, tuple[str, Any]] = {"clamp_min": ("float?", None), "clamp_max": ("float?", None)}
_CLIP: Any = getattr(getattr(getattr(np, "_core", None), "umath", None), "clip", None)  # the clip ufunc
if _CLIP is None:  # pragma: no cover - older numpy: the public wrapper
    _CLIP = lambda x, lo, hi, out: np.clip(x, lo, hi, out=out)  # noqa: E731


def check_clamp(a: dict[str, Any], dtype: str) -> None:
    """A fused clamp needs a float output and ``clamp_min <= clamp_max``.

    Example:
        >>> check_clamp({"clamp_min": 0.0, "clamp_max": 6.0}, "F32")
    """
    lo, hi = a.get("clamp_min"), a.get("clamp_max")
    if lo is None and hi is None:
        return
    if dtype not in FLOATS:
        _fail(f"clamp_min/clamp_max need a float output, got {dtype}")
    if lo is not None and hi is not None and float(lo) > float(hi):
        _fail(f"clamp_min {lo} > clamp_max {hi}")


def clamp_step(o: np.ndarray, a: dict[str, Any]) -> Any:
    """A step clamping ``o`` in place to the op's fused ``clamp_min``/``clamp_max``, or None.

    Example:
        >>> o = np.array([-1.0, 3.0, 9.0], np.float32)
        >>> clamp_step(o, {"clamp_min": 0.0, "clamp_max": 6.0})(); o.tolist()
        [0.0, 3.0, 6.0]
    """
    lo, hi = a.get("clamp_min"), a.get("clamp_max")
    if lo is None and hi is None:
        return None
    # 0-d array bounds: the ufunc takes them faster than scalars
    lo_, hi_ = np.array(-np.inf if lo is None else float(lo), o.dtype), np.array(np.inf if hi is None else float(hi), o.dtype)
    return lambda: _CLIP(o, lo_, hi_, out=o)


def apply_clamp(o: np.ndarray, a: dict[str, Any]) -> None:
    """Clamp ``o`` in place to the fused ``clamp_min``/``clamp_max`` attributes (if any).

    Example:
        >>> o = np.array([-1.0, 2.0], np.float32); apply_clamp(o, {"clamp_min": 0.0}); o.tolist()
        [0.0, 2.0]
    """
    step = clamp_step(o, a)
    if step is not None:
        step()


def _make_binary(ufunc: Any) -> Any:
    def kernel(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
        ufunc(ins[0], ins[1], out=outs[0])

    return kernel


@register("add", 2, _binary_infer(_NUMERIC, None), CLAMP_ATTRS)
def _add(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    np.add(ins[0], ins[1], out=outs[0])
    apply_clamp(outs[0], a)


for _name, _uf in _BINARY.items():
    _allowed = FLOATS if _name in ("div", "pow", "atan2") else _NUMERIC
    if _name != "add":
        register(_name, 2, _binary_infer(_allowed, None))(_make_binary(_uf))
for _name, _uf in _COMPARE.items():
    register(_name, 2, _binary_infer((*_NUMERIC, "BOOL"), "BOOL"))(_make_binary(_uf))
for _name, _uf in _LOGICAL.items():
    register(_name, 2, _binary_infer(("BOOL",), "BOOL"))(_make_binary(_uf))


def _where_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    if dtypes[0] != "BOOL":
        _fail(f"where: condition must be BOOL, got {dtypes[0]}")
    return [(_bcast(shapes), _same_dtype(dtypes[1:]))]


@register("where", 3, _where_infer)
def _where(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    np.copyto(outs[0], np.where(ins[0], ins[1], ins[2]))


def _unary_infer(allowed: tuple[str, ...]) -> Any:
    def infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
        return [(shapes[0], _same_dtype(dtypes, allowed))]

    return infer


_UNARY_FLOAT = {
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "tanh": np.tanh, "sin": np.sin, "cos": np.cos,
    "log1p": np.log1p, "expm1": np.expm1, "log2": np.log2, "log10": np.log10, "floor": np.floor, "ceil": np.ceil,
    "trunc": np.trunc, "round": np.rint,  # round: half to even, like torch.round
    "tan": np.tan, "atan": np.arctan, "asin": np.arcsin, "acos": np.arccos, "sinh": np.sinh,
    "cosh": np.cosh,
}
for _name, _uf in _UNARY_FLOAT.items():
    register(_name, 1, _unary_infer(FLOATS))(
        (lambda uf: lambda ins, outs, a: uf(ins[0], out=outs[0]))(_uf)
    )
register("neg", 1, _unary_infer(("F32", "F64", "I64", "I32", "I8")))(
    lambda ins, outs, a: np.negative(ins[0], out=outs[0])
)
register("abs", 1, _unary_infer(("F32", "F64", "I64", "I32", "I8")))(
    lambda ins, outs, a: np.abs(ins[0], out=outs[0])
)
register("sign", 1, _unary_infer(("F32", "F64", "I64", "I32", "I8")))(
    lambda ins, outs, a: np.sign(ins[0], out=outs[0])
)
register("logical_not", 1, _unary_infer(("BOOL",)))(
    lambda ins, outs, a: np.logical_not(ins[0], out=outs[0])
)


@register("rsqrt", 1, _unary_infer(FLOATS))
def _rsqrt(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    np.sqrt(ins[0], out=outs[0])
    np.reciprocal(outs[0], out=outs[0])


@register("relu", 1, _unary_infer(("F32", "F64", "I64", "I32", "I8")))
def _relu(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    np.maximum(ins[0], 0, out=outs[0])


@register("sigmoid", 1, _unary_infer(FLOATS))
def _sigmoid(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    o = outs[0]
    np.negative(ins[0], out=o)
    np.exp(o, out=o)
    np.add(o, 1, out=o)
    np.reciprocal(o, out=o)


@register("silu", 1, _unary_infer(FLOATS))
def _silu(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    _sigmoid(ins, outs, a)
    np.multiply(outs[0], ins[0], out=outs[0])


@register("clamp", 1, _unary_infer(_NUMERIC), {"min": ("float?", None), "max": ("float?", None)})
def _clamp(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    lo, hi = a["min"], a["max"]
    x = ins[0]
    if x.dtype.kind in "iu":  # integer tensors: the (integral) bounds in the tensor's dtype
        lo = None if lo is None else x.dtype.type(math.ceil(lo))
        hi = None if hi is None else x.dtype.type(math.floor(hi))
    if lo is not None and hi is not None:
        np.clip(x, lo, hi, out=outs[0])
    elif lo is not None:
        np.maximum(x, lo, out=outs[0])
    elif hi is not None:
        np.minimum(x, hi, out=outs[0])
    else:
        np.copyto(outs[0], x)


# erfc(z) for z >= 0 with fractional error < 1.2e-7 (Chebyshev-fitted exponential form)
_ERFC = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def erfc(u: np.ndarray) -> np.ndarray:
    """Complementary error function with relative error < 1.2e-7 everywhere, numpy only.

    Example:
        >>> round(float(erfc(np.array(0.5))), 6)
        0.4795
    """
    z = np.abs(u)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.full_like(t, _ERFC[-1])
    for c in _ERFC[-2::-1]:
        poly *= t
        poly += c
    poly -= z * z
    e = t * np.exp(poly)
    return np.where(u >= 0, e, 2.0 - e)


@register("erf", 1, _unary_infer(FLOATS))
def _erf(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    np.subtract(1.0, erfc(ins[0]), out=outs[0])


_CHUNK = 32768  # elements per block: gelu's three temporaries stay in the L2 cache
_SCRATCH: dict[tuple[str, int], list[np.ndarray]] = {}
# erfc(z) ~= t * poly(t) * exp(-z^2), t = 1 / (1 + P z), absolute error < 1.5e-7 (z >= 0)
_AS_P = 0.3275911
_AS = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _scratch(dtype: np.dtype, n: int) -> list[np.ndarray]:
    key = (dtype.str, n)
    bufs = _SCRATCH.get(key)
    if bufs is None:
        bufs = _SCRATCH[key] = [np.empty(_CHUNK, dtype) for _ in range(n)]
    return bufs


def _gelu_block(x: np.ndarray, o: np.ndarray, z: np.ndarray, t: np.ndarray, p: np.ndarray) -> None:
    """o = gelu(x) = relu(x) - |x| * erfc(|x|/sqrt 2) / 2 (the two branches of x * Phi(x) in one
    expression); absolute error below 1e-7 * |x|."""
    np.abs(x, out=z)
    z *= 0.7071067811865476
    np.multiply(z, _AS_P, out=t)
    t += 1.0
    np.reciprocal(t, out=t)
    np.multiply(t, _AS[4], out=p)
    for c in _AS[3::-1]:
        p += c
        p *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    p *= z  # erfc(|x| / sqrt 2)
    np.abs(x, out=z)
    p *= z
    p *= 0.5
    np.maximum(x, 0, out=o)
    o -= p


@register("gelu", 1, _unary_infer(FLOATS), {"approximate": ("str:none|tanh", "none")})
def _gelu(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    x, o = ins[0], outs[0]
    if a["approximate"] == "tanh":
        inner = x * x
        inner *= 0.044715
        inner += 1.0
        inner *= x
        inner *= np.sqrt(2.0 / np.pi).astype(x.dtype)
        np.tanh(inner, out=inner)
        inner += 1.0
        np.multiply(x, inner, out=o)
        o *= 0.5
        return
    xf, of = x.reshape(-1), o.reshape(-1)
    z, t, p = _scratch(x.dtype, 3)
    n = xf.shape[0]
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        m = e - s
        _gelu_block(xf[s:e], of[s:e], z[:m], t[:m], p[:m])


def _cast_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    return [(shapes[0], a["dtype"])]


@register("cast", 1, _cast_infer, {"dtype": ("dtype", R)})
def _cast(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    x = ins[0]
    if x.dtype.kind == "V" or (outs[0].dtype.kind == "V" and x.dtype != np.float32):  # BF16 via F32
        x = x.astype(np.float32)
    if x.dtype.kind == "f" and outs[0].dtype.kind in "iu":  # truncation toward zero like C
        x = np.trunc(x)
    np.copyto(outs[0], x, casting="unsafe")


@register("copy", 1, _unary_infer(tuple(DTYPES)))
def _copy(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    np.copyto(outs[0], ins[0])


# --------------------------------------------------------------------------- reductions


def _reduce_infer(allowed: tuple[str, ...]) -> Any:
    def infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
        dt = _same_dtype(dtypes, allowed)
        shape = shapes[0]
        axes = {_axis(ax, len(shape)) for ax in a["axes"]} if a["axes"] else set(range(len(shape)))
        if len(axes) != len(a["axes"] or axes):
            _fail(f"repeated axis in {a['axes']}")
        out = tuple(1 if i in axes else d for i, d in enumerate(shape) if a["keepdim"] or i not in axes)
        return [(out, dt)]

    return infer


_REDUCE = {"sum": np.sum, "mean": np.mean, "amax": np.amax, "amin": np.amin}
for _name, _fn in _REDUCE.items():
    register(
        _name,
        1,
        _reduce_infer(FLOATS if _name == "mean" else _NUMERIC),
        {"axes": ("ints", []), "keepdim": ("bool", False)},
    )(
        (
            lambda fn: lambda ins, outs, a: fn(
                ins[0], axis=tuple(a["axes"]) if a["axes"] else None, keepdims=a["keepdim"], out=outs[0]
            )
        )(_fn)
    )


def _argmax_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    shape = shapes[0]
    ax = _axis(a["axis"], len(shape))
    if shape[ax] == 0:
        _fail("argmax of an empty axis")
    out = tuple(1 if i == ax else d for i, d in enumerate(shape) if a["keepdim"] or i != ax)
    return [(out, "I64")]


@register("argmax", 1, _argmax_infer, {"axis": ("int", R), "keepdim": ("bool", False)})
def _argmax(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    np.copyto(outs[0], np.argmax(ins[0], axis=a["axis"], keepdims=a["keepdim"]))


def _softmax_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    _axis(a["axis"], len(shapes[0]))
    return [(shapes[0], _same_dtype(dtypes, FLOATS))]


@register("softmax", 1, _softmax_infer, {"axis": ("int", R)})
def _softmax(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    x, o, ax = ins[0], outs[0], a["axis"]
    np.subtract(x, x.max(axis=ax, keepdims=True), out=o)
    np.exp(o, out=o)
    o /= o.sum(axis=ax, keepdims=True)


@register("log_softmax", 1, _softmax_infer, {"axis": ("int", R)})
def _log_softmax(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    x, o, ax = ins[0], outs[0], a["axis"]
    np.subtract(x, x.max(axis=ax, keepdims=True), out=o)
    o -= np.log(np.exp(o).sum(axis=ax, keepdims=True))


# --------------------------------------------------------------------------- shape and data movement


def _numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _reshape_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    shape = tuple(a["shape"])
    if _numel(shape) != _numel(shapes[0]):
        _fail(f"reshape {shapes[0]} -> {shape} changes the element count")
    return [(shape, dtypes[0])]


@register("reshape", 1, _reshape_infer, {"shape": ("dims", R)}, alias=True)
def _reshape(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    np.copyto(outs[0], ins[0].reshape(outs[0].shape))  # only used when not aliased


def _permute_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    perm, shape = a["perm"], shapes[0]
    if sorted(perm) != list(range(len(shape))):
        _fail(f"permute: {perm} is not a permutation of {len(shape)} axes")
    return [(tuple(shape[p] for p in perm), dtypes[0])]


@register("permute", 1, _permute_infer, {"perm": ("ints", R)})
def _permute(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    np.copyto(outs[0], ins[0].transpose(a["perm"]))


def _expand_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    shape = tuple(a["shape"])
    if _bcast([shapes[0], shape]) != shape:
        _fail(f"expand: {shapes[0]} does not broadcast to {shape}")
    return [(shape, dtypes[0])]


@register("expand", 1, _expand_infer, {"shape": ("dims", R)})
def _expand(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    np.copyto(outs[0], ins[0])


def _slice_bounds(size: int, start: int, end: int, step: int) -> tuple[int, int, int]:
    start = min(max(start, 0), size)
    end = min(max(end, start), size)
    return start, end, max(0, (end - start + step - 1) // step)


def _slice_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    shape = list(shapes[0])
    ax = _axis(a["axis"], len(shape))
    if a["step"] < 1:
        _fail(f"slice: step must be >= 1, got {a['step']}")
    shape[ax] = _slice_bounds(shape[ax], a["start"], a["end"], a["step"])[2]
    return [(tuple(shape), dtypes[0])]


@register("slice", 1, _slice_infer, {"axis": ("int", R), "start": ("dim", 0), "end": ("dim", R), "step": ("int", 1)})
def _slice(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    x = ins[0]
    ax = a["axis"] % x.ndim
    start, end, _ = _slice_bounds(x.shape[ax], a["start"], a["end"], a["step"])
    index = [slice(None)] * x.ndim
    index[ax] = slice(start, end, a["step"])
    np.copyto(outs[0], x[tuple(index)])


def _concat_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    dt = _same_dtype(dtypes)
    rank = len(shapes[0])
    ax = _axis(a["axis"], rank)
    for s in shapes:
        if len(s) != rank or any(s[i] != shapes[0][i] for i in range(rank) if i != ax):
            _fail(f"concat: shapes {shapes} differ outside axis {ax}")
    out = list(shapes[0])
    out[ax] = sum(s[ax] for s in shapes)
    return [(tuple(out), dt)]


@register("concat", (1, 1024), _concat_infer, {"axis": ("int", R)})
def _concat(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    np.concatenate(ins, axis=a["axis"], out=outs[0])


def _embedding_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    if len(shapes[0]) != 2:
        _fail(f"embedding: table must be 2-D, got {shapes[0]}")
    if dtypes[1] not in ("I64", "I32"):
        _fail(f"embedding: indices must be I64 or I32, got {dtypes[1]}")
    return [((*shapes[1], shapes[0][1]), dtypes[0])]


@register("embedding", 2, _embedding_infer)
def _embedding(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    table, idx = ins
    if idx.size and (idx.min() < 0 or idx.max() >= table.shape[0]):
        _fail(f"embedding: index out of range [0, {table.shape[0]}) (got {idx.min()}..{idx.max()})")
    np.take(table, idx, axis=0, out=outs[0])


def _gather_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    x, idx = shapes
    if dtypes[1] not in ("I64", "I32"):
        _fail(f"gather: indices must be I64 or I32, got {dtypes[1]}")
    if len(x) != len(idx):
        _fail(f"gather: input {x} and index {idx} must have the same rank")
    ax = _axis(a["axis"], len(x))
    if any(idx[d] > x[d] for d in range(len(x)) if d != ax):
        _fail(f"gather: index {idx} is larger than input {x} outside axis {ax}")
    return [(idx, dtypes[0])]


@register("gather", 2, _gather_infer, {"axis": ("int", R)})
def _gather(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    x, idx = ins
    ax = a["axis"] % x.ndim
    if idx.size and (idx.min() < 0 or idx.max() >= x.shape[ax]):
        _fail(f"gather: index out of range [0, {x.shape[ax]}) along axis {ax}")
    region = tuple(slice(None) if d == ax else slice(0, idx.shape[d]) for d in range(x.ndim))
    np.copyto(outs[0], np.take_along_axis(x[region], idx, axis=ax))


def _index_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    x, idx = shapes[0], shapes[1:]
    if len(idx) > len(x):
        _fail(f"index: {len(idx)} index tensors for a rank-{len(x)} input")
    if any(d not in ("I64", "I32") for d in dtypes[1:]):
        _fail(f"index: index tensors must be I64 or I32, got {dtypes[1:]}")
    return [((*_bcast(idx), *x[len(idx):]), dtypes[0])]


@register("index", (2, 33), _index_infer)
def _index(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    x, idx = ins[0], ins[1:]
    for d, i in enumerate(idx):
        if i.size and (i.min() < -x.shape[d] or i.max() >= x.shape[d]):
            _fail(f"index: index out of range [-{x.shape[d]}, {x.shape[d]}) on axis {d}")
    np.copyto(outs[0], x[tuple(idx)])


def _full_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    return [(tuple(a["shape"]), a["dtype"])]


@register("full", 0, _full_infer, {"shape": ("dims", R), "value": ("float", R), "dtype": ("dtype", R)})
def _full(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    outs[0].fill(a["value"])


def _arange_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    if a["step"] == 0:
        _fail("arange: step 0")
    n = max(0, -((a["start"] - a["end"]) // a["step"]))
    return [((n,), a["dtype"])]


@register("arange", 0, _arange_infer, {"start": ("dim", 0), "end": ("dim", R), "step": ("int", 1), "dtype": ("dtype", "I64")})
def _arange(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    outs[0][...] = np.arange(a["start"], a["end"], a["step"])


def _dequant_infer(shapes: list[Shape], dtypes: list[str], a: dict[str, Any]) -> list[tuple[Shape, str]]:
    if dtypes != ["I8", "F32"]:
        _fail(f"dequantize: expects (I8, F32), got {dtypes}")
    if len(shapes[1]) != 1 or not shapes[0] or shapes[1][0] != shapes[0][0]:
        _fail(f"dequantize: scale {shapes[1]} must be 1-D of length dim 0 of {shapes[0]}")
    return [(shapes[0], "F32")]


@register("dequantize", 2, _dequant_infer)
def _dequantize(ins: list[np.ndarray], outs: list[np.ndarray], a: dict[str, Any]) -> None:
    q, scale = ins
    np.multiply(q, scale.reshape((-1,) + (1,) * (q.ndim - 1)), out=outs[0], casting="unsafe")


__all__ = ["OPS"]
