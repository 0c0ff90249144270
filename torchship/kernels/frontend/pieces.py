"""``torch.cat``/``torch.stack``/``chunk``/``split``/``unbind`` of blocks and slices of a
block along one dim (``x[..., :h]``, ``x[..., h:]``, ``x[:, 8:16]``), as trees of the
``join``/``half`` ops (:mod:`torchship.kernels.ops.pieces`); ``permute``/``movedim``,
``flatten``/``unflatten``, ``repeat`` and ``flip`` of dims of fixed size; ``expand``/
``expand_as``/``broadcast_to``.

Triton blocks have power-of-two shapes and no slicing, so the pieces are equal, aligned
power-of-two parts of a dim of fixed size: a constant dim, or a whole (``:``) dim whose size
is then fixed to the one seen when the kernel was traced (the launcher checks it at every
call). ``cat`` of ``2^k`` equal pieces is ``k`` levels of pairwise joins; ``stack`` stacks
pairs and concatenates those; a slice descends the halves that contain it. Anything else
(tiles, unequal or unaligned pieces, three pieces) is refused naming the line, with what to
write instead.

Example:
    >>> [n for n in COMPOSED if n in ("cat", "stack", "chunk", "flip")]
    ['cat', 'stack', 'chunk', 'flip']
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from typing import Any

import torch

from torchship.kernels.errors import KernelSyntaxError, KernelTypeError
from torchship.kernels.frontend import reshape, roll
from torchship.kernels.frontend.compose import _arg
from torchship.kernels.ir import ConstDim, FullDim, TileDim, TileInfo, Value
from torchship.kernels.ops import broadcast_shapes, promote

_HINT = ("pieces of a block are equal power-of-two parts of a dim of fixed size (a constant, "
         "or a whole `:` dim): halves, quarters, ...; for other shapes load the parts from "
         "the tensor (x[tm, :] of host views x[:, :h] and x[:, h:]) and store them separately")


def dim_size(h: Any, v: Value, dim: int, what: str, node: ast.AST) -> int:
    """The fixed size of ``v``'s dim ``dim``: a constant, or a whole dim made static at its
    traced size (a power of two; checked at launch)."""
    d = v.shape[dim].find()
    if isinstance(d, ConstDim):
        return d.n
    if isinstance(d, TileDim):
        raise h.err(KernelSyntaxError, f"{what} along the tile {d.tile.name!r}: a tile's block "
                    "has no fixed size to cut or join", hint=_HINT, node=node)
    assert isinstance(d, FullDim)
    if d.static is None:
        n = h.b.hint(d.size)
        if not isinstance(n, int) or n < 1 or n & (n - 1):
            raise h.err(KernelTypeError, f"{what} along the whole dim {d.label} of size {n}: "
                        "Triton can cut and join only power-of-two blocks", hint=_HINT,
                        node=node)
        d.make_static(n)
        _specialise(h.b, d.size)
    return int(d.static)


def _specialise(b: Any, size: Value) -> None:
    """Compile one kernel per value of the size a whole dim was fixed to (a tensor size or an
    int argument), so the same kernel serves other sizes; otherwise the launcher refuses
    them."""
    for p in b.params:
        if p.value is size:
            if re.fullmatch(r"c\[\d+\]\.shape\[\d+\]", p.getter):
                b.specialized.add(p.getter)
            elif re.fullmatch(r"c\[\d+\]", p.getter):
                b.const_int(size, "a size")


def _norm(dim: Any, rank: int, h: Any, node: ast.AST) -> int:
    if not isinstance(dim, int) or not -rank <= dim < rank:
        raise h.err(KernelTypeError, f"dim {dim!r} is not a dim of a rank-{rank} block",
                    node=node)
    return dim % rank


def _pow2(n: int) -> bool:
    return n >= 1 and not n & (n - 1)


def parts(h: Any, v: Value, dim: int, count: int, node: ast.AST, what: str) -> list[Value]:
    """``v`` cut into ``count`` equal parts along ``dim`` (a power of two)."""
    n = dim_size(h, v, dim, what, node)
    if not isinstance(count, int) or not _pow2(count) or count > n:
        raise h.err(KernelTypeError, f"{what} into {count} parts of a dim of size {n}: only "
                    "a power-of-two number of equal parts is supported", hint=_HINT, node=node)
    out = [v]
    while len(out) < count:
        out = [h.b.emit("half", [p], {"dim": dim, "which": w}) for p in out for w in (0, 1)]
    return out


def slice_dim(h: Any, v: Value, dim: int, lo: Any, hi: Any, node: ast.AST) -> Value:
    """``v`` sliced ``lo:hi`` along ``dim``: an aligned power-of-two part of it."""
    text = ast.unparse(node)
    n = dim_size(h, v, dim, f"the slice `{text}`", node)
    bounds = []
    for b, default in ((lo, 0), (hi, n)):
        b = default if b is None else h.b.const_int(b, f"a bound of the slice `{text}`")
        bounds.append(min(max(b + n if b < 0 else b, 0), n))
    lo, hi = bounds
    size = hi - lo
    if not _pow2(size) or lo % size:
        raise h.err(KernelTypeError, f"the slice `{text}` takes [{lo}, {hi}) of a dim of size "
                    f"{n}: only aligned power-of-two parts (a half, a quarter, ...) can be cut "
                    "from a block", hint=_HINT, node=node)
    while n > size:
        n //= 2
        v = h.b.emit("half", [v], {"dim": dim, "which": 1 if lo >= n else 0})
        lo %= n
    return v


def cut_slices(h: Any, v: Value, entries: list[ast.AST], node: ast.AST) \
        -> tuple[Value, list[ast.AST]]:
    """Apply the bounded slices of a block index (``v[..., :h]``, ``v[:, 8:16]``) first: the
    cut block and the index with those entries turned into ``:``."""
    used = sum(1 for e in entries if not (isinstance(e, ast.Constant) and e.value in (None, ...)))
    out: list[ast.AST] = []
    src = 0
    for e in entries:
        if isinstance(e, ast.Constant) and e.value is None:
            out.append(e)
            continue
        if isinstance(e, ast.Constant) and e.value is Ellipsis:
            src += v.ndim - used
            out.append(e)
            continue
        if isinstance(e, ast.Slice) and e.step is None and (e.lower or e.upper) and \
                src < v.ndim:
            lo, hi = (h.expr(b) if b is not None else None for b in (e.lower, e.upper))
            v = slice_dim(h, v, src, lo, hi, node)
            e = ast.Slice()
        out.append(e)
        src += 1
    return v, out


def _blocks(h: Any, seq: Any, name: str, node: ast.AST) -> list[Value]:
    if not isinstance(seq, (tuple, list)) or not seq:
        raise h.err(KernelTypeError, f"torch.{name}() takes a tuple or list of blocks",
                    node=node)
    vals = [h.operand(v) for v in seq]
    dtype, _ = promote(vals)
    return [v if v.dtype == dtype else h.b.emit("to", [v], {"dtype": dtype}) for v in vals]


def _join_all(h: Any, vals: list[Value], dim: int, stack: bool, node: ast.AST,
              name: str) -> Value:
    if not _pow2(len(vals)):
        raise h.err(KernelTypeError, f"torch.{name}() of {len(vals)} blocks: Triton joins "
                    "blocks pairwise, so the count must be a power of two", hint=_HINT, node=node)
    rank = vals[0].ndim
    if any(v.ndim != rank for v in vals):
        raise h.err(KernelTypeError, f"torch.{name}() of blocks of different ranks", node=node)
    if not stack:
        sizes = {dim_size(h, v, dim, f"torch.{name}()", node) for v in vals}
        if len(sizes) > 1:
            raise h.err(KernelTypeError, f"torch.{name}() of pieces of sizes "
                        f"{sorted(sizes)} along dim {dim}: Triton joins only equal pieces",
                        hint=_HINT, node=node)
    rest = [tuple(d for i, d in enumerate(v.shape) if i != dim or stack) for v in vals]
    broadcast_shapes(rest)  # unifies whole dims; refuses mismatched tiles
    level = vals
    if stack:
        level = [h.b.emit("join", level[i:i + 2], {"dim": dim, "stack": True})
                 for i in range(0, len(level), 2)] if len(level) > 1 else \
            [h.method(level[0], "unsqueeze", [dim], {}, node)]
    while len(level) > 1:
        level = [h.b.emit("join", level[i:i + 2], {"dim": dim, "stack": False})
                 for i in range(0, len(level), 2)]
    return level[0]


def pieces(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Any:
    """torch.cat/concat/concatenate/stack of a tuple of blocks; chunk/split/unbind of one."""
    if name in ("cat", "concat", "concatenate", "stack"):
        vals = _blocks(h, _arg(args, kwargs, 0, "tensors", None), name, node)
        dim = _arg(args, kwargs, 1, "dim", 0)
        stack = name == "stack"
        dim = _norm(dim, vals[0].ndim + stack, h, node)
        return _join_all(h, vals, dim, stack, node, name)
    x = h.operand(_arg(args, kwargs, 0, "input", None))
    if name == "unbind":
        dim = _norm(_arg(args, kwargs, 1, "dim", 0), x.ndim, h, node)
        n = dim_size(h, x, dim, "unbind()", node)
        return tuple(h.squeeze(p, dim, node) for p in parts(h, x, dim, n, node, "unbind()"))
    how = _arg(args, kwargs, 1, "chunks" if name == "chunk" else "split_size_or_sections", None)
    dim = _norm(_arg(args, kwargs, 2, "dim", 0), x.ndim, h, node)
    n = dim_size(h, x, dim, f"{name}()", node)
    if isinstance(how, Value):  # an int argument: compiled in
        how = h.b.const_int(how, f"the size of {name}()")
    if name == "chunk":
        count = how
    elif isinstance(how, (tuple, list)) and len(set(how)) == 1 and sum(how) == n:
        count = len(how)
    elif isinstance(how, int) and how >= 1 and n % how == 0:
        count = n // how
    else:
        raise h.err(KernelTypeError, f"split({how!r}) of a dim of size {n}: only equal "
                    "power-of-two parts", hint=_HINT, node=node)
    return tuple(parts(h, x, dim, count, node, f"{name}()"))


def permute(h: Any, x: Value, perm: list[Any], node: ast.AST) -> Value:
    """``x.permute(*perm)`` (any order of a block's dims; ``tl.permute``)."""
    if len(perm) == 1 and isinstance(perm[0], (tuple, list)):
        perm = list(perm[0])
    norm = [_norm(p, x.ndim, h, node) for p in perm]
    if sorted(norm) != list(range(x.ndim)):
        raise h.err(KernelTypeError, f"permute({perm}) is not an order of the block's "
                    f"{x.ndim} dims", node=node)
    return x if norm == sorted(norm) else h.b.emit("permute", [x], {"perm": tuple(norm)})


def regroup(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Any:
    """``permute``/``movedim``; ``flatten(start, end)`` and ``unflatten(dim, sizes)`` of dims of
    fixed size (``tl.reshape``); ``reshape``/``view`` (:mod:`.reshape`)."""
    x = h.operand(_arg(args, kwargs, 0, "input", None))
    if name == "permute":
        return permute(h, x, list(args[1:]) or list(kwargs.get("dims", ())), node)
    if name == "movedim":
        src, dst = (_norm(_arg(args, kwargs, i, k, 0), x.ndim, h, node)
                    for i, k in ((1, "source"), (2, "destination")))
        order = [d for d in range(x.ndim) if d != src]
        order.insert(dst, src)
        return permute(h, x, order, node)
    if name in ("reshape", "view"):
        return reshape.reshape(h, x, list(args[1:]) or list(kwargs.get("shape", ())), node)
    dims = list(x.shape)
    if name == "flatten":
        lo = _norm(_arg(args, kwargs, 1, "start_dim", 0), x.ndim, h, node) if x.ndim else 0
        hi = _norm(_arg(args, kwargs, 2, "end_dim", -1), x.ndim, h, node) if x.ndim else 0
        size = 1
        for d in range(lo, hi + 1):
            size *= dim_size(h, x, d, f"`{ast.unparse(node)}`", node)
        dims[lo:hi + 1] = [ConstDim(size)]
    else:
        d = _norm(_arg(args, kwargs, 1, "dim", None), x.ndim, h, node)
        n = dim_size(h, x, d, f"`{ast.unparse(node)}`", node)
        sizes = [h.b.const_int(v, "an unflatten size") for v in _arg(args, kwargs, 2, "sizes", ())]
        known = 1
        for v in sizes:
            known *= v if v != -1 else 1
        sizes = [n // known if v == -1 else v for v in sizes]
        if known * (n // known) != n or any(not _pow2(v) for v in sizes) or \
                _prod(sizes) != n:
            raise h.err(KernelTypeError, f"unflatten of a dim of size {n} into {sizes}: the "
                        "sizes must be powers of two multiplying to it", node=node)
        dims[d:d + 1] = [ConstDim(v) for v in sizes]
    return h.b.emit("regroup", [x], {"dims": tuple(dims)})


def copies(h: Any, name: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Any:
    """``repeat`` (a concatenation of copies along fixed-size dims), ``flip`` of fixed-size
    dims and ``expand``/``expand_as``/``broadcast_to`` (to tiles, ``-1`` or power-of-two
    sizes on size-1 dims)."""
    x = h.operand(args[0])
    rest = list(args[1:])
    if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
        rest = list(rest[0])
    text = f"`{ast.unparse(node)}`"
    if name == "repeat":
        if len(rest) != x.ndim or not all(isinstance(r, int) for r in rest):
            raise h.err(KernelTypeError, f"{text}: give one int count per dim of the rank-"
                        f"{x.ndim} block", node=node)
        for d, r in enumerate(rest):
            if r != 1:
                x = _join_all(h, [x] * r, d, False, node, "repeat")
        return x
    if name == "flip":
        dims = rest or list(kwargs.get("dims", ()))
        for d in (_norm(d, x.ndim, h, node) for d in dims):
            dim_size(h, x, d, text, node)  # a padded dim would flip its padding in
            x = h.b.emit("flip", [x], {"dim": d})
        return x
    if name == "expand_as":
        target = list(rest[0].shape)
    else:
        target = []
        for i, r in enumerate(rest):
            src = x.shape[i - (len(rest) - x.ndim)] if i >= len(rest) - x.ndim else None
            if isinstance(r, TileInfo):
                target.append(r.dim)
            elif r == -1 and src is not None:
                target.append(src)
            elif isinstance(r, int) and _pow2(r):
                target.append(ConstDim(r))
            else:
                raise h.err(KernelTypeError, f"{text}: size {r!r} (sizes are tiles, -1 or "
                            "powers of two)", node=node)
    try:
        shape = broadcast_shapes([tuple(x.shape), tuple(target)])
    except KernelTypeError as exc:
        raise h.err(KernelTypeError, f"{text}: {exc.message}", node=node) from None
    if len(shape) != len(target):
        raise h.err(KernelTypeError, f"{text}: the block has more dims than the target",
                    node=node)
    return h.b.emit("broadcast", [x], {"dims": shape})


def _prod(values: list[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


COMPOSED: dict[str, Callable[..., Any]] = {
    **{n: pieces for n in ("cat", "concat", "concatenate", "stack", "chunk", "split", "unbind")},
    **{n: regroup for n in ("permute", "movedim", "flatten", "unflatten", "reshape", "view")},
    **{n: copies for n in ("repeat", "flip", "expand", "expand_as", "broadcast_to")},
    "roll": roll.roll}
#: torch callables of device code -> composition name
FUNCTIONS: dict[Any, str] = {getattr(torch, n): n for n in COMPOSED if hasattr(torch, n) and
                             n not in ("view", "repeat", "expand", "expand_as")}
#: tensor methods of device code -> composition name
METHODS: dict[str, str] = {n: n for n in COMPOSED if n not in ("cat", "concat", "concatenate",
                                                               "stack")}
