"""``ts.reduce(fn, x, dim)`` and ``ts.associative_scan(fn, x, dim)`` in device code: trace the
user's combine function into a :class:`~torchship.kernels.ops.combine.CombineFn`.

``fn`` is a plain module-level ``def`` (like any helper, see
:mod:`torchship.kernels.frontend.inline`) of two values (or two tuples of values, one per
input block); it is inlined on 0-d placeholders into a separate node list, which must be
element-wise ops of its arguments and constants only.

Example:
    >>> import torch, torchship.kernels as ts
    >>> def add(a, b):
    ...     return a + b
    >>> ts.associative_scan(add, torch.tensor([1, 2, 3]), 0).tolist()  # reference semantics
    [1, 3, 6]
"""

from __future__ import annotations

import ast
from typing import Any

import torch

from torchship.kernels.combine_args import combine_args
from torchship.kernels.errors import KernelSyntaxError, KernelTypeError
from torchship.kernels.frontend import inline
from torchship.kernels.ir import TileDim, Value
from torchship.kernels.ops import OPS, broadcast_shapes
from torchship.kernels.ops.combine import CombineFn, work_dtype


def combine_call(h: Any, name: str, args: list[Any], kwargs: dict[str, Any],
                 node: ast.AST, what: str | None = None) -> Any:
    """Emit a ``custom_reduce``/``custom_scan`` node per input block; a tuple of results for
    a tuple input. ``what`` names a torch function built on this (its combine function is
    torchship's own, so it is not checked as a user helper)."""
    builtin = what is not None
    what = what or ("ts.reduce" if name == "ts_reduce" else "ts.associative_scan")
    fn = args[0] if args else kwargs.get("combine_fn")
    x = args[1] if len(args) > 1 else kwargs.get("input")
    dim = args[2] if len(args) > 2 else kwargs.get("dim")
    if not builtin and not inline.is_helper(fn):
        raise h.err(KernelSyntaxError, f"{what}: the combine function must be a plain "
                    "module-level `def` of two values", hint="def combine(a, b): return a + b",
                    node=node)
    items = x if isinstance(x, tuple) else (x,)
    if not items or not all(isinstance(v, Value) and v.ndim for v in items):
        raise h.err(KernelTypeError, f"{what} needs a block or a tuple of blocks", node=node)
    shape = broadcast_shapes([v.shape for v in items])  # unifies the blocks' `:` dims
    if any(len(v.shape) != len(shape) or not all(a.same(b) for a, b in zip(v.shape, shape))
           for v in items):
        raise h.err(KernelTypeError, f"{what}: the blocks of a tuple must have one shape",
                    node=node)
    if not isinstance(dim, int) or not -items[0].ndim <= dim < items[0].ndim:
        raise h.err(KernelTypeError, f"{what} needs an int dim of the block, got {dim!r}",
                    node=node)
    dim %= items[0].ndim
    d = items[0].shape[dim].find()
    if isinstance(d, TileDim) and d.tile.grid and name == "ts_scan":
        raise h.err(KernelSyntaxError, f"{what} along a tiled dimension of the launch grid "
                    f"({d.tile.name!r}) would restart in every program",
                    hint="take the whole dimension in the block (x[tm, :]); a segment sum "
                    "over sorted ids (Helion's scan within each tile) is one "
                    "ts.atomic_add(out, [ids[te], tf], x[te, tf])", node=node)
    combine = _trace(h, fn, items, isinstance(x, tuple), what, node)
    if name == "ts_reduce":
        other = args[3] if len(args) > 3 else kwargs.get("other", 0)
        keep = bool(args[4] if len(args) > 4 else kwargs.get("keep_dims", False))
        attrs = {"dim": dim, "keepdim": keep, "other": other,
                 "ordered": not _commutative(fn, items, isinstance(x, tuple))}
        op = "custom_reduce"
    else:
        reverse = bool(args[3] if len(args) > 3 else kwargs.get("reverse", False))
        attrs = {"dim": dim, "reverse": reverse, "other": kwargs.get("other", 0)}
        op = "custom_scan"
    other = attrs["other"] if isinstance(attrs["other"], tuple) else \
        (attrs["other"],) * len(items)
    if len(other) != len(items) or not all(
            isinstance(o, (int, float)) and (v.dtype.is_floating_point or float(o).is_integer())
            for o, v in zip(other, items)):
        raise h.err(KernelTypeError, f"{what}(other=) must be a number per input block (fn's "
                    f"identity, an int for integer blocks), got {attrs['other']!r}",
                    hint="other=(float('-inf'), 0) for a (values, indices) pair", node=node)
    attrs["other"] = tuple(o if v.dtype.is_floating_point else int(o)
                           for o, v in zip(other, items))
    outs = tuple(h.b.emit(op, list(items), {**attrs, "fn": combine, "output": i})
                 for i in range(len(items)))
    return outs if isinstance(x, tuple) else outs[0]


def _commutative(fn: Any, items: tuple[Value, ...], as_tuple: bool) -> bool:
    """Whether ``fn(a, b) == fn(b, a)`` on 64 sample pairs (ties, signed zeros, infinities
    and random values), run eagerly in float64 / int64 / bool. A reduction by a function that
    is not (a linear recurrence, "keep the left one on ties") must fold in order; one that
    raises here is treated as not commutative (the order-keeping form is always right).

    Example:
        >>> x = Value((), torch.float32)
        >>> _commutative(lambda a, b: a + b, (x,), False), _commutative(lambda a, b: 2 * a + b, (x,), False)
        (True, False)
    """
    g = torch.Generator().manual_seed(0)

    def sample(v: Value) -> torch.Tensor:
        if v.dtype == torch.bool:
            return torch.rand(64, generator=g) < 0.5
        if not v.dtype.is_floating_point:
            return torch.randint(-3, 4, (64,), generator=g, dtype=torch.int64)
        special = torch.tensor([0.0, -0.0, 1.0, -1.0, float("inf"), float("-inf")],
                               dtype=torch.float64)
        small = torch.randint(-2, 3, (26,), generator=g).double()  # ties
        return torch.cat([special, small, torch.randn(32, generator=g, dtype=torch.float64)])

    def same(p: Any, q: Any) -> bool:
        if not isinstance(p, torch.Tensor) or not isinstance(q, torch.Tensor):
            return bool(p == q)
        if p.is_floating_point():
            return torch.equal(p.isnan(), q.isnan()) and bool(
                ((p == q) & (p.signbit() == q.signbit()) | p.isnan()).all())
        return torch.equal(p, q)

    a = tuple(sample(v) for v in items)
    b = tuple(sample(v)[torch.randperm(64, generator=g)] for v in items)
    try:
        with torch.no_grad():
            ab = fn(*combine_args(fn, a, b)) if as_tuple else fn(a[0], b[0])
            ba = fn(*combine_args(fn, b, a)) if as_tuple else fn(b[0], a[0])
    except Exception:  # noqa: BLE001 - not runnable eagerly: keep the order to be safe
        return False
    ab = ab if isinstance(ab, tuple) else (ab,)
    ba = ba if isinstance(ba, tuple) else (ba,)
    return len(ab) == len(ba) and all(same(p, q) for p, q in zip(ab, ba))


def _trace(h: Any, fn: Any, items: tuple[Value, ...], as_tuple: bool, what: str,
           node: ast.AST) -> CombineFn:
    b = h.b
    left = [Value((), work_dtype(v.dtype), f"a{i}") for i, v in enumerate(items)]
    right = [Value((), work_dtype(v.dtype), f"b{i}") for i, v in enumerate(items)]
    body: list[Any] = []
    saved = b.region
    b.region = body
    try:
        ret = inline.inline_call(b, fn, combine_args(fn, tuple(left), tuple(right))
                                 if as_tuple else [left[0], right[0]], {}, node)
        results = list(ret) if isinstance(ret, tuple) else [ret]
        if len(results) != len(items):
            raise h.err(KernelTypeError, f"{what}: the combine function returns "
                        f"{len(results)} value(s) for {len(items)} input block(s)", node=node)
        results = [r if isinstance(r, Value) and r.dtype == p.dtype
                   else b.emit("to", [h.operand(r)], {"dtype": p.dtype})
                   for r, p in zip(results, left)]
    finally:
        b.region = saved
    known = {p.id for p in left + right}
    for n in body:
        uses_outer = any(isinstance(i, Value) and i.id not in known for i in n.inputs)
        if OPS[n.op].kind != "pointwise" or uses_outer or (n.out is not None and n.out.ndim):
            raise h.err(KernelSyntaxError, f"{what}: the combine function may only use "
                        f"element-wise ops on its arguments and constants (found `{n.op}`"
                        f"{' of a value from outside it' if uses_outer else ''})",
                        hint="pass other blocks as part of the input tuple", node=node)
        if n.out is not None:
            known.add(n.out.id)
    return CombineFn(left + right, body, results)


def _logaddexp(a: Any, b: Any) -> Any:
    """log(exp(a) + exp(b)) without overflow; equal infinities stay themselves."""
    m = torch.maximum(a, b)
    inf = (m == float("inf")) | (m == float("-inf"))
    return torch.where(inf, m, m + torch.log1p(torch.exp(-torch.abs(a - b))))


def logcumsumexp(h: Any, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Any:
    """``torch.logcumsumexp(x, dim)``: a scan with :func:`_logaddexp` (torch's result for
    rows of any range: no shift by the row maximum that would underflow small entries),
    computed in float32 for half types and cast back like torch.

    Example:
        >>> float(_logaddexp(torch.tensor(0.0), torch.tensor(0.0)))  # log(2)
        0.6931471824645996
    """
    x = args[0] if args else kwargs.get("input")
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    if not isinstance(x, Value) or not x.dtype.is_floating_point:
        raise h.err(KernelTypeError, "logcumsumexp() needs a floating-point block", node=node)
    work = x if x.dtype.itemsize >= 4 else h.b.emit("to", [x], {"dtype": torch.float32})
    out = combine_call(h, "ts_scan", [_logaddexp, work, dim], {"other": float("-inf")}, node,
                       what="logcumsumexp")
    return out if out.dtype == x.dtype else h.b.emit("to", [out], {"dtype": x.dtype})


def _running_max(a: Any, b: Any) -> Any:
    """(value, index) pairs: the later one wins on ties and NaN wins (torch's cummax)."""
    va, ia = a
    vb, ib = b
    take = (vb != vb) | ((va == va) & (vb >= va))
    return torch.where(take, vb, va), torch.where(take, ib, ia)


def _running_min(a: Any, b: Any) -> Any:
    va, ia = a
    vb, ib = b
    take = (vb != vb) | ((va == va) & (vb <= va))
    return torch.where(take, vb, va), torch.where(take, ib, ia)


def cummax(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Any:
    """``torch.cummax/cummin(x, dim)``: ``(values, indices)`` by a scan of (value, position)
    pairs; ties go to the later position and NaN propagates with its position, like torch.

    Example:
        >>> v, i = _running_max((torch.tensor(2.0), torch.tensor(0)), (torch.tensor(2.0), torch.tensor(1)))
        >>> float(v), int(i)
        (2.0, 1)
    """
    from torchship.kernels.frontend.calls import MaxResult

    x = args[0] if args else kwargs.get("input")
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    if not isinstance(x, Value) or not x.ndim or not isinstance(dim, int):
        raise h.err(KernelTypeError, f"{name}(x, dim) needs a block and an int dim", node=node)
    dim %= x.ndim
    pos = h.b.emit("dim_index", [x], {"dim": dim})
    lowest = float("-inf") if name == "cummax" else float("inf")
    if not x.dtype.is_floating_point:
        info = torch.iinfo(x.dtype) if x.dtype != torch.bool else None
        lowest = (0 if name == "cummax" else 1) if info is None else \
            (info.min if name == "cummax" else info.max)
    values, indices = combine_call(
        h, "ts_scan", [_running_max if name == "cummax" else _running_min, (x, pos), dim],
        {"other": (lowest, 0)}, node, what=name)
    if values.dtype != x.dtype:
        values = h.b.emit("to", [values], {"dtype": x.dtype})
    return MaxResult(values, indices)
