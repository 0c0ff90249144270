"""torch ops that device code writes as compositions of core ops: moments (var/std), softmax,
logsumexp, norms, normalize/cosine_similarity, any/all and activations (leaky_relu, softplus, elu, hardtanh, ...).

Half-precision blocks compute in float32 and round once at the end, like torch's kernels.
Each entry of :data:`COMPOSED` takes ``(handler, name, args, kwargs, node)`` like
:func:`torchship.kernels.frontend.funcs.call`.

Example:
    >>> sorted(n for n in COMPOSED if n.startswith("soft"))
    ['softmax', 'softplus', 'softsign']
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from typing import Any

import torch

from torchship.kernels.errors import KernelTypeError
from torchship.kernels.frontend.funcs import _count, _norm_dims, reduction
from torchship.kernels.ir import Value

_HALF = (torch.float16, torch.bfloat16)


def _arg(args: list[Any], kwargs: dict[str, Any], i: int, name: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _float_block(h: Any, name: str, x: Any, node: ast.AST) -> Value:
    if not isinstance(x, Value) or not x.dtype.is_floating_point:
        raise h.err(KernelTypeError, f"{name}() needs a floating-point block", node=node,
                    hint="convert with .to(torch.float32) first")
    return x if x.dtype not in _HALF else h.b.emit("to", [x], {"dtype": torch.float32})


def _back(h: Any, out: Value, dtype: torch.dtype) -> Value:
    return out if out.dtype == dtype else h.b.emit("to", [out], {"dtype": dtype})


def moments(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Any:
    """var/std/var_mean/std_mean like torch: ``correction=`` (default 1) or ``unbiased=``,
    two passes (mean, then squared deviations)."""
    b = h.b
    x = args[0]
    work = _float_block(h, name, x, node)
    dim = _arg(args, kwargs, 1, "dim", None)
    keep = bool(kwargs.get("keepdim", False))
    correction = kwargs.get("correction", 1)
    if len(args) > 2 or "unbiased" in kwargs:
        correction = int(bool(_arg(args, kwargs, 2, "unbiased", True)))
    if not isinstance(correction, (int, float)) or isinstance(correction, bool):
        raise h.err(KernelTypeError, f"{name}(correction=) must be a number", node=node)
    dims = tuple(_norm_dims(h, work, dim, node))
    mean = reduction(h, "mean", [work], {"dim": dims, "keepdim": True}, node)
    centered = b.emit("sub", [work, mean])
    sq = reduction(h, "sum", [b.emit("mul", [centered, centered])],
                   {"dim": dims, "keepdim": keep}, node)
    count: Any = 1
    for d in dims:
        c = _count(h, work.shape[d])
        count = count * c if not isinstance(count, Value) and not isinstance(c, Value) \
            else b.emit("mul", [h.operand(count), h.operand(c)])
    denom = b.emit("sub", [count, correction]) if isinstance(count, Value) else \
        max(count - correction, 0)
    out = b.emit("truediv", [sq, denom])
    if name.startswith("std"):
        out = b.emit("sqrt", [out])
    out = _back(h, out, x.dtype)
    if not name.endswith("_mean"):
        return out
    if not keep:
        mean = reduction(h, "mean", [work], {"dim": dims}, node)
    return out, _back(h, mean, x.dtype)


def softmax(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Any:
    """softmax/log_softmax along ``dim`` like torch (``dtype=`` casts the input first):
    max-subtracted exp over its sum (log: minus the log of the sum)."""
    b = h.b
    x = args[0]
    dim = _arg(args, kwargs, 1, "dim", None)
    dtype = _arg(args, kwargs, 2, "dtype", None)
    if not isinstance(x, Value) or not isinstance(dim, int):
        raise h.err(KernelTypeError, f"{name}(x, dim) needs a block and an int dim", node=node)
    if isinstance(dtype, torch.dtype):
        x = b.emit("to", [x], {"dtype": dtype})
    work = _float_block(h, name, x, node)
    shifted = b.emit("sub", [work, reduction(h, "amax", [work, dim], {"keepdim": True}, node)])
    e = b.emit("exp", [shifted])
    total = reduction(h, "sum", [e, dim], {"keepdim": True}, node)
    out = b.emit("truediv", [e, total]) if name == "softmax" else \
        b.emit("sub", [shifted, b.emit("log", [total])])
    return _back(h, out, x.dtype)


def _finite_max(h: Any, work: Value, dim: Any, keep: bool, node: ast.AST) -> Value:
    m = reduction(h, "amax", [work, dim], {"keepdim": keep}, node)
    return h.b.emit("where", [h.b.emit("eq", [h.b.emit("abs", [m]), math.inf]), 0.0, m])


def logsumexp(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Any:
    """``log(sum(exp(x), dim))`` shifted by the (finite) max, like torch: all ``-inf`` rows
    give ``-inf``."""
    b = h.b
    x = args[0]
    work = _float_block(h, name, x, node)
    dim = tuple(_norm_dims(h, work, _arg(args, kwargs, 1, "dim", None), node))
    keep = bool(_arg(args, kwargs, 2, "keepdim", False))
    shift = _finite_max(h, work, dim, True, node)
    total = reduction(h, "sum", [b.emit("exp", [b.emit("sub", [work, shift])])],
                      {"dim": dim, "keepdim": keep}, node)
    shift = shift if keep else _finite_max(h, work, dim, False, node)
    return _back(h, b.emit("add", [b.emit("log", [total]), shift]), x.dtype)


def norm(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Any:
    """``torch.linalg.vector_norm`` / ``torch.norm`` / ``x.norm`` for p = 1, 2 (or "fro"),
    inf and other positive numbers."""
    b = h.b
    x = args[0]
    work = _float_block(h, name, x, node)
    p = _arg(args, kwargs, 1, "ord" if name == "vector_norm" else "p", 2)
    dim = _arg(args, kwargs, 2, "dim", None)
    keep = bool(_arg(args, kwargs, 3, "keepdim", False))
    p = 2 if p == "fro" else p
    if not isinstance(p, (int, float)) or isinstance(p, bool) or p <= 0:
        raise h.err(KernelTypeError, f"{name}(p={p!r}) is not supported in device code",
                    hint="p must be a positive number or inf", node=node)
    a = b.emit("abs", [work])
    kw = {"dim": dim, "keepdim": keep}
    if math.isinf(p):
        out = reduction(h, "amax", [a], kw, node)
    elif p == 1:
        out = reduction(h, "sum", [a], kw, node)
    elif p == 2:
        out = b.emit("sqrt", [reduction(h, "sum", [b.emit("mul", [work, work])], kw, node)])
    else:
        out = b.emit("pow", [reduction(h, "sum", [b.emit("pow", [a, float(p)])], kw, node),
                             1.0 / p])
    return _back(h, out, x.dtype)


def any_all(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Any:
    """``any``/``all`` over ``dim`` (all dims without one): a max/min of ``x != 0``."""
    b = h.b
    x = args[0]
    if not isinstance(x, Value):
        raise h.err(KernelTypeError, f"{name}() needs a block", node=node)
    nz = b.emit("to", [b.emit("ne", [x, 0])], {"dtype": torch.int32})
    red = reduction(h, "amax" if name == "any" else "amin", [nz],
                    {"dim": _arg(args, kwargs, 1, "dim", None),
                     "keepdim": bool(_arg(args, kwargs, 2, "keepdim", False))}, node)
    return b.emit("ne", [red, 0])


def _softplus(h: Any, x: Value, beta: float, threshold: float) -> Value:
    b = h.b
    bx = b.emit("mul", [x, beta]) if beta != 1 else x
    soft = b.emit("log1p", [b.emit("exp", [bx])])
    if beta != 1:
        soft = b.emit("truediv", [soft, beta])
    return b.emit("where", [b.emit("gt", [bx, threshold]), x, soft])


def _expm1_part(h: Any, x: Value, alpha: float, scale_in: float = 1.0) -> Value:
    """``min(0, alpha * expm1(x * scale_in))``."""
    b = h.b
    arg = b.emit("mul", [x, scale_in]) if scale_in != 1 else x
    return b.emit("minimum", [b.emit("mul", [b.emit("expm1", [arg]), alpha]), 0.0])


_SELU = (1.6732632423543772, 1.0507009873554805)


def activation(h: Any, name: str, args: list[Any], kwargs: dict[str, Any],
               node: ast.AST) -> Any:
    """Element-wise activations of ``torch.nn.functional``."""
    b = h.b
    x = args[0]
    work = _float_block(h, name, x, node)
    relu = b.emit("maximum", [work, 0.0])
    if name == "leaky_relu":
        slope = _arg(args, kwargs, 1, "negative_slope", 0.01)
        out = b.emit("where", [b.emit("gt", [work, 0.0]), work, b.emit("mul", [work, slope])])
    elif name == "softplus":
        out = _softplus(h, work, _arg(args, kwargs, 1, "beta", 1.0),
                        _arg(args, kwargs, 2, "threshold", 20.0))
    elif name == "mish":
        out = b.emit("mul", [work, b.emit("tanh", [_softplus(h, work, 1.0, 20.0)])])
    elif name == "logsigmoid":
        neg_abs = b.emit("neg", [b.emit("abs", [work])])
        out = b.emit("sub", [b.emit("minimum", [work, 0.0]),
                             b.emit("log1p", [b.emit("exp", [neg_abs])])])
    elif name == "elu":
        out = b.emit("add", [relu, _expm1_part(h, work, _arg(args, kwargs, 1, "alpha", 1.0))])
    elif name == "celu":
        alpha = _arg(args, kwargs, 1, "alpha", 1.0)
        out = b.emit("add", [relu, _expm1_part(h, work, alpha, 1.0 / alpha)])
    elif name == "selu":
        out = b.emit("mul", [b.emit("add", [relu, _expm1_part(h, work, _SELU[0])]), _SELU[1]])
    elif name in ("hardtanh", "relu6"):
        lo, hi = (0.0, 6.0) if name == "relu6" else (_arg(args, kwargs, 1, "min_val", -1.0),
                                                   _arg(args, kwargs, 2, "max_val", 1.0))
        out = b.emit("minimum", [b.emit("maximum", [work, lo]), hi])
    elif name == "hardsigmoid":
        out = b.emit("minimum", [b.emit("maximum", [b.emit("add", [
            b.emit("truediv", [work, 6.0]), 0.5]), 0.0]), 1.0])
    elif name == "hardswish":
        out = b.emit("mul", [work, b.emit("truediv", [b.emit("minimum", [b.emit("maximum", [
            b.emit("add", [work, 3.0]), 0.0]), 6.0]), 6.0])])
    else:
        assert name == "softsign", name
        out = b.emit("truediv", [work, b.emit("add", [b.emit("abs", [work]), 1.0])])
    return _back(h, out, x.dtype)


ACTIVATIONS = ("leaky_relu", "softplus", "mish", "logsigmoid", "elu", "celu", "selu",
               "hardtanh", "relu6", "hardsigmoid", "hardswish", "softsign")
def normalize(h: Any, name: str, args: list[Any], kwargs: dict[str, Any],
              node: ast.AST) -> Any:
    """``F.normalize(x, p=2, dim=1, eps=1e-12)``: ``x / clamp_min(norm_p(x), eps)``;
    ``F.cosine_similarity(x1, x2, dim=1, eps=1e-8)`` as torch computes it: each block over
    its own clamped 2-norm, then the sum of the product."""
    b = h.b
    if name == "normalize":
        x = args[0]
        p, dim = _arg(args, kwargs, 1, "p", 2.0), _arg(args, kwargs, 2, "dim", 1)
        eps = _arg(args, kwargs, 3, "eps", 1e-12)
        n = norm(h, "norm", [x, p, dim, True], {}, node)
        return b.emit("truediv", [x, b.emit("maximum", [n, eps])])
    x1, x2 = (h.operand(v) for v in args[:2])
    dim, eps = _arg(args, kwargs, 2, "dim", 1), _arg(args, kwargs, 3, "eps", 1e-8)
    units = [b.emit("truediv", [v, b.emit("maximum", [norm(h, "norm", [v, 2, dim, True], {},
                                                            node), eps])]) for v in (x1, x2)]
    return reduction(h, "sum", [b.emit("mul", units), dim], {}, node)


COMPOSED: dict[str, Callable[..., Any]] = {
    "var": moments, "std": moments, "var_mean": moments, "std_mean": moments,
    "softmax": softmax, "log_softmax": softmax, "logsumexp": logsumexp,
    "vector_norm": norm, "norm": norm, "any": any_all, "all": any_all,
    "normalize": normalize, "cosine_similarity": normalize,
    **{n: activation for n in ACTIVATIONS},
}
