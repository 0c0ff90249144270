"""Device-code functions and methods, by name: map arguments onto IR ops.

Example:
    >>> sorted(REDUCTIONS)
    ['amax', 'amin', 'argmax', 'argmin', 'max', 'mean', 'min', 'prod', 'sum']
"""

from __future__ import annotations

import ast
import contextlib
import math
import re
from typing import Any

import torch

from torchship.kernels.errors import KernelSyntaxError, KernelTypeError
from torchship.kernels.ir import ConstDim, FullDim, TileDim, TileInfo, Value
from torchship.kernels.ops.pointwise import TORCH_UNARY

REDUCTIONS = {"sum", "mean", "amax", "amin", "max", "min", "argmax", "argmin", "prod"}
_UNARY = set(TORCH_UNARY)
_VIEWS = {"squeeze", "unsqueeze", "transpose", "t"}
#: the same functions on plain Python numbers (host values folded at trace time)
_PYFUNCS = {"exp": math.exp, "log": math.log, "sqrt": math.sqrt, "abs": abs,
            "exp2": lambda x: 2.0**x, "log2": math.log2, "sin": math.sin, "cos": math.cos,
            "floor": math.floor, "ceil": math.ceil, "tanh": math.tanh, "erf": math.erf,
            "neg": lambda x: -x, "log1p": math.log1p, "expm1": math.expm1,
            "log10": math.log10, "tan": math.tan, "trunc": math.trunc,
            "reciprocal": lambda x: 1.0 / x, "rsqrt": lambda x: 1.0 / math.sqrt(x),
            "round": round, "atan": math.atan, "asin": math.asin, "acos": math.acos,
            "sinh": math.sinh, "cosh": math.cosh, "asinh": math.asinh, "acosh": math.acosh,
            "atanh": math.atanh, "erfc": math.erfc, "lgamma": math.lgamma,
            **{n: (lambda x, f=f: f(torch.tensor(float(x), dtype=torch.float64)).item())
               for n, f in [("erfinv", torch.erfinv), ("digamma", torch.digamma),
                            ("ndtr", torch.special.ndtr), ("ndtri", torch.special.ndtri),
                            ("log_ndtr", torch.special.log_ndtr), ("i0", torch.special.i0),
                            ("i0e", torch.special.i0e), ("i1", torch.special.i1),
                            ("i1e", torch.special.i1e)]}}


def call(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Any:
    """Apply device function ``name`` (see :data:`calls.FUNCTIONS`)."""
    b = h.b
    if name in _VIEWS:
        if not args or not isinstance(args[0], Value):
            raise h.err(KernelTypeError, f"torch.{name}() needs a block", node=node)
        return h.method(args[0], name, args[1:], kwargs, node)
    if name in _UNARY:
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, Value):
            if name in _PYFUNCS and isinstance(x, (int, float)):
                return _PYFUNCS[name](x)
            x = h.operand(x)
        if name == "round":
            return _round(h, x, kwargs.get("decimals", 0), node)
        return b.emit(name, [x])
    if name == "gelu":
        approx = kwargs.get("approximate", "none")
        if approx not in ("none", "tanh"):
            raise h.err(KernelTypeError, f"gelu(approximate={approx!r}) is not supported",
                        node=node)
        return b.emit("gelu" if approx == "none" else "gelu_tanh", [h.operand(args[0])])
    if name in ("maximum", "minimum", "add", "mul", "sub", "truediv", "and_", "or_", "xor",
                "lshift", "rshift", "atan2"):
        if len(args) != 2:
            raise h.err(KernelTypeError, f"{name} takes two operands", node=node)
        if name == "atan2" and not any(isinstance(a, Value) for a in args):
            return math.atan2(*args)
        if name in ("add", "sub") and "alpha" in kwargs:
            args = [args[0], h.binop(ast.Mult(), args[1], kwargs["alpha"], node)]
        return b.emit(name, [h.operand(a) for a in args])
    if name == "square":
        return b.emit("mul", [h.operand(args[0]), h.operand(args[0])])
    if name == "pow":
        base, exp = args[0], args[1] if len(args) > 1 else kwargs["exponent"]
        return b.emit("pow", [h.operand(base), h.operand(exp)])
    if name == "where":
        if len(args) != 3:
            raise h.err(KernelTypeError, "torch.where(cond, a, b) needs three arguments",
                        node=node)
        cond = args[0]
        if not isinstance(cond, Value) or cond.dtype != torch.bool:
            raise h.err(KernelTypeError, "torch.where's condition must be a bool block",
                        node=node)
        return b.emit("where", [cond, h.operand(args[1]), h.operand(args[2])])
    if name in ("clamp", "clamp_min", "clamp_max"):
        x = h.operand(args[0])
        lo = args[1] if len(args) > 1 and name != "clamp_max" else kwargs.get("min")
        hi = args[2] if len(args) > 2 else args[1] if len(args) > 1 and name == "clamp_max" \
            else kwargs.get("max")
        if lo is not None:
            x = b.emit("maximum", [x, h.operand(lo)])
        if hi is not None:
            x = b.emit("minimum", [x, h.operand(hi)])
        return x
    if name in ("pymin", "pymax"):
        if len(args) != 2:
            raise h.err(KernelSyntaxError, f"{name[2:]}() in device code takes two values",
                        node=node)
        if not any(isinstance(a, Value) for a in args):
            return (min if name == "pymin" else max)(*args)
        return b.emit("minimum" if name == "pymin" else "maximum", [h.operand(a) for a in args])
    if name in ("pyfloat", "pyint"):
        if len(args) == 1 and not isinstance(args[0], Value):
            return (float if name == "pyfloat" else int)(*args)
        raise h.err(KernelSyntaxError, f"{name[2:]}() of a device value is not supported",
                    hint="use .to(torch.float32) / .to(torch.int32)", node=node)
    if name == "to":
        dtype = kwargs.get("dtype")
        for a in args[1:]:
            if isinstance(a, torch.dtype):
                dtype = a
            elif isinstance(a, Value):
                dtype = a.dtype
        if not isinstance(dtype, torch.dtype):
            raise h.err(KernelTypeError, ".to() needs a dtype in device code",
                        hint="x.to(torch.float32)", node=node)
        return b.emit("to", [args[0]], {"dtype": dtype})
    if name in REDUCTIONS:
        return reduction(h, name, args, kwargs, node)
    from torchship.kernels.frontend import compose

    if name in compose.COMPOSED:
        return compose.COMPOSED[name](h, name, args, kwargs, node)
    from torchship.kernels.frontend import elementwise

    if name in elementwise.COMPOSED:
        return elementwise.COMPOSED[name](h, name, args, kwargs, node)
    from torchship.kernels.frontend import factories, pieces

    if name in pieces.COMPOSED:
        return pieces.COMPOSED[name](h, name, args, kwargs, node)
    if name in factories.COMPOSED:
        return factories.COMPOSED[name](h, name, args, kwargs, node)
    if name in ("gather", "embedding"):
        from torchship.kernels.frontend.takealong import take_along

        return take_along(h, name, args, kwargs, node)
    if name in ("ts_load", "ts_store"):
        from torchship.kernels.frontend.masked import masked_access

        return masked_access(h, name, args, kwargs, node)
    if name == "einsum":
        from torchship.kernels.frontend.einsum import einsum

        return einsum(h, name, args, kwargs, node)
    if name in ("zeros_like", "ones_like", "full_like"):
        return _like(h, name, args, kwargs, node)
    if name == "masked_fill":
        x, mask, value = (args + [kwargs.get("mask"), kwargs.get("value")])[:3]
        if not isinstance(x, Value) or not isinstance(mask, Value) or mask.dtype != torch.bool:
            raise h.err(KernelTypeError, "masked_fill(mask, value) needs a block and a bool "
                        "block mask", node=node)
        out = b.emit("where", [mask, h.operand(value), x])
        return out if out.dtype == x.dtype else b.emit("to", [out], {"dtype": x.dtype})
    if name in ("cumsum", "cumprod"):
        return scan(h, name, args, kwargs, node)
    if name == "matmul":
        return h.matmul(h.operand(args[0]), h.operand(args[1]))
    if name == "addmm":
        bias, m1, m2 = args[:3]
        beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
        prod = h.matmul(m1, m2)
        if alpha != 1:
            prod = b.emit("mul", [prod, alpha])
        if beta != 1:
            bias = b.emit("mul", [h.operand(bias), beta])
        return b.emit("add", [h.operand(bias), prod])
    if name == "dot":
        a, bb = args[0], args[1]
        acc = args[2] if len(args) > 2 else kwargs.get("acc")
        from torchship.kernels.ops import promote

        if acc is not None and not isinstance(acc, Value):
            raise h.err(KernelTypeError, "ts.dot(acc=) must be a block", node=node)
        work = promote([a, bb])[0] if isinstance(a, Value) and isinstance(bb, Value) else None
        out = acc.dtype if acc is not None else (
            torch.float64 if work == torch.float64 else torch.float32)
        return h.matmul(a, bb, acc, out)
    if name in ("zeros", "full"):
        shape_arg = args[0] if args else kwargs.get("shape")
        if name == "full":
            value = args[1] if len(args) > 1 else kwargs.get("value", kwargs.get("fill_value"))
            dtype = args[2] if len(args) > 2 else kwargs.get("dtype", torch.float32)
        else:
            value = 0
            dtype = args[1] if len(args) > 1 else kwargs.get("dtype", torch.float32)
        if not isinstance(dtype, torch.dtype):
            raise h.err(KernelTypeError, f"ts.{name}: dtype must be a torch dtype", node=node)
        dims = shape_dims(h, shape_arg, node)
        if isinstance(value, Value):
            if value.ndim:
                raise h.err(KernelTypeError, "ts.full value must be a scalar", node=node)
            return b.emit("full", [value], {"shape": dims, "dtype": dtype, "value": None})
        if not isinstance(value, (int, float, bool)):
            raise h.err(KernelTypeError, f"ts.full value must be a number, got {value!r}",
                        node=node)
        return b.emit("full", [], {"shape": dims, "dtype": dtype, "value": value})
    if name in ("rand", "randn"):
        return _rand(h, name, args, kwargs, node)
    if name in ("sort", "topk", "argsort"):
        return _sort(h, name, args, kwargs, node)
    if name in ("ts_reduce", "ts_scan"):
        from torchship.kernels.frontend.combine import combine_call

        return combine_call(h, name, args, kwargs, node)
    if name in ("cummax", "cummin"):
        from torchship.kernels.frontend.combine import cummax

        return cummax(h, name, args, kwargs, node)
    if name == "logcumsumexp":
        from torchship.kernels.frontend.combine import logcumsumexp

        return logcumsumexp(h, args, kwargs, node)
    if name == "atomic_add":
        target, index, value = (args + [None, None, None])[:3]
        if value is None:
            value = kwargs.get("value")
        from torchship.kernels.frontend.captures import TensorRef

        if not isinstance(target, TensorRef):
            raise h.err(KernelTypeError, "ts.atomic_add target must be a tensor argument",
                        node=node)
        call_node = node
        assert isinstance(call_node, ast.Call)
        idx_ast = call_node.args[1] if len(call_node.args) > 1 else None
        if not isinstance(idx_ast, (ast.List, ast.Tuple)):
            raise h.err(KernelSyntaxError, "ts.atomic_add index must be a literal list, "
                        "e.g. [tm, 0]", node=node)
        elts = [_as_slice(e) for e in idx_ast.elts]  # `slice(None)` in a list means `:`
        index = h.tensor_index(target, ast.Tuple(elts, ast.Load()), node)
        b.emit("atomic_add", [h.operand(value)], {"tensor": target, "index": index})
        return None
    raise h.err(KernelSyntaxError, f"`{name}` is not supported in device code", node=node)


def _rand(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Value:
    """``ts.rand/randn(shape, seed)``: a uniform / normal float32 block (see
    :mod:`torchship.kernels.ops.random`)."""
    from torchship.kernels.ops.random import extent_of

    shape = args[0] if args else kwargs.get("shape")
    seed = args[1] if len(args) > 1 else kwargs.get("seed")
    if not (isinstance(seed, int) and not isinstance(seed, bool)) and not (
            isinstance(seed, Value) and not seed.ndim and not seed.dtype.is_floating_point
            and seed.dtype != torch.bool):
        raise h.err(KernelTypeError, f"ts.{name}(shape, seed): seed must be an int, got "
                    f"{seed!r}", hint=f"pass an int kernel argument: ts.{name}([tm, tn], seed)",
                    node=node)
    entries = shape if isinstance(shape, tuple) else (shape,)
    if any(isinstance(s, Value) and s.node is not None and s.node.op == "tile_attr"
           for s in entries):
        raise h.err(KernelSyntaxError, f"ts.{name} takes tiles, not tile.block_size",
                    hint=f"ts.{name}([tm, tn], seed): the numbers follow the tiles' positions",
                    node=node)
    dims = shape_dims(h, shape, node)
    return h.b.emit("rand", [seed, *(extent_of(d) for d in dims)],
                    {"shape": dims, "normal": name == "randn"})


def _sort(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Any:
    """``torch.sort/argsort/topk`` along the last dim, which must be whole in the block (a
    ``:`` dim or a constant size); see :mod:`torchship.kernels.ops.sort`."""
    from torchship.kernels.frontend.calls import MaxResult

    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, Value) or x.ndim == 0:
        raise h.err(KernelTypeError, f"{name}() needs a block", node=node)
    k = None
    if name == "topk":
        k = args[1] if len(args) > 1 else kwargs.get("k")
        rest = args[2:]
        if not kwargs.get("largest", True) or not kwargs.get("sorted", True):
            raise h.err(KernelSyntaxError, "topk(largest=False / sorted=False) is not supported "
                        "in device code", hint="negate the block: torch.topk(-v, k) gives the "
                        "k smallest, negated", node=node)
        if isinstance(k, Value):  # an int argument: one kernel per k
            k = h.b.const_int(k, "topk's k")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise h.err(KernelTypeError, f"topk's k must be a positive int, got {k!r}",
                        hint="a literal or an int argument", node=node)
        descending = True
    else:
        rest = args[1:]
        descending = bool(rest[1] if len(rest) > 1 else kwargs.get("descending", False))
    dim = rest[0] if rest else kwargs.get("dim", -1)
    if not isinstance(dim, int) or dim % x.ndim != x.ndim - 1:
        raise h.err(KernelSyntaxError, f"{name}() along dim {dim!r}: only the last dim of a "
                    "block is supported", hint="load the block transposed (x[tn, tm].T) or "
                    "with the sorted dim last", node=node)
    d = x.shape[-1].find()
    if isinstance(d, TileDim):
        raise h.err(KernelSyntaxError, f"{name}() along the tile {d.tile.name!r} would sort "
                    "each tile on its own", hint="take the whole dim in the block: x[tm, :]",
                    node=node)
    if x.dtype.itemsize > 4:
        raise h.err(KernelTypeError, f"{name}() of a {x.dtype} block is not supported",
                    hint="convert to float32 / int32 first", node=node)
    if k is not None and isinstance(d, ConstDim) and k > d.n:
        raise h.err(KernelTypeError, f"topk: k={k} exceeds the dim's size {d.n}", node=node)
    pow2 = None if k is None else 1 << (k - 1).bit_length()
    if pow2 is not None and pow2 != k:
        # the prefix becomes a whole dim, whose padded block is at least 16 (the launcher's)
        pow2 = max(16, pow2)
        if isinstance(d, ConstDim) and d.n < pow2:
            raise h.err(KernelTypeError, f"topk: k={k} (not a power of two) of a {d.n}-wide "
                        "constant block: its top k would be padded to 16 lanes, wider than "
                        "the block", hint=f"load the dim whole (x[tm, :]) or take "
                        f"topk(v, {1 << (k - 1).bit_length()}) and store its first {k} columns "
                        "through a host view", node=node)
    keys = h.b.emit("sort_keys", [x], {"k": pow2, "descending": descending})
    indices = h.b.emit("sort_indices", [keys])
    if name == "argsort":
        return indices
    values = h.b.emit("sort_values", [keys], {"dtype": x.dtype})
    if k is not None and k != pow2:
        # the first k of the top power of two: a whole dim of extent k (padded to `pow2`,
        # masked), so `out[tm, :] = values` stores k columns and reductions skip the rest
        size = h.b.param("topk_k", repr(k), torch.int32, k)
        dim = FullDim(size.name, size.value)
        h.b.full_dims.append(dim)
        values, indices = (h.b.emit("topk_prefix", [v], {"dim": dim}) for v in (values, indices))
    return MaxResult(values, indices)


def _round(h: Any, x: Any, decimals: Any, node: ast.AST) -> Any:
    """``torch.round(x, decimals=)``: half to even; integers unchanged; decimals scale by
    ``10**decimals`` first, like torch."""
    if not isinstance(decimals, int) or isinstance(decimals, bool):
        raise h.err(KernelTypeError, "round(decimals=) must be an int", node=node)
    if not isinstance(x, Value) or not x.dtype.is_floating_point:
        return x
    if decimals == 0:
        return h.b.emit("round", [x])
    scale = 10.0 ** decimals
    work = x if x.dtype not in (torch.float16, torch.bfloat16) else \
        h.b.emit("to", [x], {"dtype": torch.float32})  # one rounding at the end, like torch
    out = h.b.emit("truediv", [h.b.emit("round", [h.b.emit("mul", [work, scale])]), scale])
    return out if out.dtype == x.dtype else h.b.emit("to", [out], {"dtype": x.dtype})


def shape_dims(h: Any, shape: Any, node: ast.AST) -> tuple[Any, ...]:
    """Dims for ``ts.zeros/ts.full`` shape entries: tiles and compile-time ints."""
    if not isinstance(shape, tuple):
        shape = (shape,)
    dims = []
    for s in shape:
        if isinstance(s, TileInfo):
            dims.append(s.dim)
            continue
        if isinstance(s, Value) and s.node is not None and s.node.op == "tile_attr" and \
                s.node.attrs["attr"] == "block_size":
            dims.append(s.node.attrs["tile"].dim)
            continue
        label = _int_argument(h.b, s)
        hint = h.b.hint(s)
        n = None
        if label is not None and isinstance(hint, int) and hint >= 1 and not hint & (hint - 1):
            # a power-of-two int argument is specialised on; a tensor size cannot be
            with contextlib.suppress(KernelTypeError):
                n = h.b.const_int(s, "a ts.zeros/ts.full shape entry")
        if label is not None and n is None:
            # an int known at launch (a tensor size, an int argument): a full dim of that size,
            # padded to a power of two and masked like `x[tm, :]`
            dim = FullDim(label, s)
            h.b.full_dims.append(dim)
            dims.append(dim)
            continue
        if n is None:
            n = h.b.const_int(s, "a ts.zeros/ts.full shape entry")
        if n < 1 or n & (n - 1):
            raise h.err(KernelTypeError, f"block shape entry {n} must be a power of two",
                        hint="use tiles for ragged sizes; literal sizes must be 1, 2, 4, ...",
                        node=node)
        dims.append(ConstDim(n))
    return tuple(dims)


def _int_argument(b: Any, x: Any) -> str | None:
    """A label for ``x`` when it is an int kernel argument known only at launch (a captured
    int: its name; a tensor size: ``x.size(1)``), else None."""
    if not isinstance(x, Value) or x.node is not None or x.id not in b.hints or \
            x.dtype not in (torch.int32, torch.int64):
        return None
    for p in b.params:
        if p.value is x:
            m = re.fullmatch(r"(.+)_size(\d+)", p.name)
            return f"{m.group(1)}.size({m.group(2)})" if m and ".shape[" in p.getter else p.name
    return None


def _norm_dims(h: Any, x: Value, dim: Any, node: ast.AST) -> list[int]:
    if dim is None:
        return list(range(x.ndim))
    dims = list(dim) if isinstance(dim, tuple) else [dim]
    out = []
    for d in dims:
        if not isinstance(d, int) or isinstance(d, bool):
            raise h.err(KernelTypeError, f"reduction dim must be an int, got {d!r}", node=node)
        if not -x.ndim <= d < max(x.ndim, 1):
            raise h.err(KernelTypeError, f"dim {d} out of range for a {x.ndim}-D block",
                        node=node)
        out.append(d % x.ndim)
    return sorted(set(out))


def _count(h: Any, d: Any) -> Any:
    d = d.find()
    if isinstance(d, ConstDim):
        return d.n
    if isinstance(d, FullDim):
        return d.size
    assert isinstance(d, TileDim)
    return h.b.emit("tile_attr", [], {"tile": d.tile, "attr": "count"}, f"{d.tile.name}_count")


def reduction(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Any:
    """sum/prod/mean/amax/amin/max/min/argmax/argmin with ``dim``/``keepdim`` like torch."""
    b = h.b
    x = args[0]
    if name in ("max", "min") and len(args) > 1 and isinstance(args[1], Value):
        return b.emit("maximum" if name == "max" else "minimum", [x, args[1]])
    if not isinstance(x, Value):
        raise h.err(KernelTypeError, f"{name}() needs a block", node=node)
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    keep = bool(args[2] if len(args) > 2 else kwargs.get("keepdim", False))
    if x.ndim == 0:
        return x
    dims = _norm_dims(h, x, dim, node)
    kind = {"sum": "sum", "prod": "prod", "mean": "sum", "amax": "max", "amin": "min",
            "max": "max", "min": "min", "argmax": "argmax", "argmin": "argmin"}[name]
    if kind in ("argmax", "argmin") and dim is None and x.ndim != 1:
        raise h.err(KernelSyntaxError, f"{name}() without dim on a {x.ndim}-D block is not "
                    "supported", hint="pass dim=", node=node)
    if name == "mean" and not x.dtype.is_floating_point:
        raise h.err(KernelTypeError, "mean() of an integer block", node=node,
                    hint="convert with .to(torch.float32) first")
    if kind in ("argmax", "argmin"):
        return _arg_reduce(h, x, kind, dims[0], keep)
    counts = [_count(h, x.shape[d]) for d in dims]
    val = x
    for d in reversed(dims):
        val = b.emit("reduce", [val], {"kind": kind, "dim": d, "keepdim": keep})
    if name == "mean":
        for c in counts:
            val = b.emit("truediv", [val, c])
        if val.dtype != x.dtype:
            val = b.emit("to", [val], {"dtype": x.dtype})
    if name in ("max", "min") and dim is not None:
        from torchship.kernels.frontend.calls import MaxResult

        return MaxResult(val, _arg_reduce(h, x, "arg" + kind, dims[0], keep))
    return val


def _arg_reduce(h: Any, x: Value, kind: str, dim: int, keep: bool) -> Value:
    """argmax/argmin along ``dim``: the first extreme position, or for floats the first NaN
    where the row holds one, like torch (``tl.argmax`` skips NaN)."""
    b = h.b
    attrs = {"dim": dim, "keepdim": keep}
    if not x.dtype.is_floating_point:
        return b.emit("reduce", [x], {"kind": kind, **attrs})
    is_nan = b.emit("ne", [x, x])
    # NaN lanes out of the value search (an all-NaN chunk would trip the interpreter's nanmax)
    clean = b.emit("where", [is_nan, float("-inf") if kind == "argmax" else float("inf"), x])
    idx = b.emit("reduce", [clean], {"kind": kind, **attrs})
    nan = b.emit("to", [is_nan], {"dtype": torch.int32})
    first = b.emit("reduce", [nan], {"kind": "argmax", **attrs})
    any_nan = b.emit("gt", [b.emit("reduce", [nan], {"kind": "max", **attrs}), 0])
    return b.emit("where", [any_nan, first, idx])


def _like(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Any:
    """``torch.zeros_like/ones_like/full_like(block, ...)``: a block of the same shape."""
    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, Value):
        raise h.err(KernelSyntaxError, f"`torch.{name}` of a tensor allocates a tensor: not "
                    "allowed in device code", hint=f"allocate outputs in host code; in device "
                    f"code {name} takes a block (torch.{name}(x[tm, :], ...))", node=node)
    value = {"zeros_like": 0, "ones_like": 1}.get(name)
    if name == "full_like":
        value = args[1] if len(args) > 1 else kwargs.get("fill_value")
    if not isinstance(value, (int, float, bool)):
        raise h.err(KernelTypeError, "full_like(block, value): value must be a number",
                    node=node)
    dtype = kwargs.get("dtype") or x.dtype
    return h.b.emit("full", [], {"shape": tuple(x.shape), "dtype": dtype, "value": value})


def _as_slice(e: ast.expr) -> ast.expr:
    """``slice(a, b)`` written as a call (a list cannot hold ``a:b``) as the ``Slice`` node."""
    if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "slice" \
            and not e.keywords and 1 <= len(e.args) <= 2:
        lo, hi = (None, e.args[0]) if len(e.args) == 1 else e.args
        return ast.Slice(None if _is_none(lo) else lo, None if _is_none(hi) else hi, None)
    return e


def _is_none(a: ast.expr | None) -> bool:
    return a is None or (isinstance(a, ast.Constant) and a.value is None)


def scan(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Any:
    """cumsum/cumprod along ``dim``: a whole dim (``:`` or a constant), or an inner loop's tile
    (the scan covers that tile; the kernel carries the running total between tiles)."""
    x = args[0]
    if not isinstance(x, Value):
        raise h.err(KernelTypeError, f"{name}() needs a block", node=node)
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    if dim is None or x.ndim == 0:
        raise h.err(KernelSyntaxError, f"{name}() needs dim= (and a block with dimensions)",
                    node=node)
    if kwargs.get("dtype") is not None:
        raise h.err(KernelTypeError, f"{name}(dtype=) is not supported in device code",
                    hint=f"convert first: x.to(torch.float32).{name}(dim)", node=node)
    (d,) = _norm_dims(h, x, dim, node)
    dd = x.shape[d].find()
    if isinstance(dd, TileDim) and dd.tile.grid:
        raise h.err(KernelSyntaxError, f"{name}() along a tiled dimension of the launch grid "
                    f"({dd.tile.name!r}) would restart in every program", hint="take the whole dimension in the block "
                    "(x[tm, :]), or scan tile by tile in an inner loop carrying the running "
                    "total: `for tn in ts.tile(n): c = x[tm, tn].cumsum(1) + carry[:, None]; "
                    "carry = carry + x[tm, tn].sum(1)`", node=node)
    return h.b.emit("scan", [x], {"kind": name, "dim": d})
