"""``block.view(...)`` / ``block.reshape(...)`` / ``torch.reshape(block, shape)``: regroupings
that keep every tile its own dim and split or merge only dims of fixed size.

The block's dims are cut at its tiles into runs of fixed-size dims (constants, or whole ``:``
dims fixed to their traced power-of-two size, like ``flatten``); the new shape must name the
same tiles in the same order, and each run's new sizes (powers of two, one ``-1`` allowed)
must multiply to the run's size. That is one ``tl.reshape`` (row-major, like torch's ``view``
of a contiguous tensor). A ``-1`` may also stand for a tile the new shape leaves out
(``v.view(-1, 4, 16)`` of a ``[tm, 64]`` block). Merging a tile with other dims
(``v.reshape(-1)`` of ``[tm, 4]``, ``[tb, tm, d] -> [tb * tm, d]``) is refused: a tile's
block has no fixed size, and its edge mask would have to follow the merged rows; the refusal
names the host view to tile instead (``x.view(b * m, d)``).
``v.view(dtype)`` reads the same bits as a dtype of the same width.

Example:
    >>> _runs([1, "t", 4, 8], lambda d: isinstance(d, str))
    ([[1], [4, 8]], ['t'])
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

import torch

from torchship.kernels.errors import KernelSyntaxError, KernelTypeError
from torchship.kernels.ir import ConstDim, TileDim, TileInfo, Value

__all__ = ["reshape"]

_HINT = ("keep each tile as its own dim (v.reshape(tm, 4, 16) of a [tm, 64] block) and split "
         "or merge only fixed-size dims (constants, whole `:` dims), in powers of two; or "
         "use unflatten/flatten/permute; to interleave two [tk, tn] blocks into [2 * tk, tn] "
         "for a dot (int4 unpacking), dot each with the matching host view (A[:, 0::2], "
         "A[:, 1::2]); to merge a tile with other dims, view the tensor in host code "
         "(x.view(b * m, d)) and tile the merged dim")

_MERGE_HINT = ("merge in host code and tile the merged dim: [tb, tm, d] -> [tb * tm, d] is "
               "x.view(b * m, d)[tr, :] with `for tr in ts.tile(b * m)`, and [tm, 64] -> "
               "[2 * tm, 32] is x.view(2 * m, 32)[tr, :] with a tile tr of twice the rows; a "
               "dot takes the 3-D block as is (ts.dot(x[tb, tm, :], w[tb, :, tn])); splitting "
               "a fixed-size dim keeps the tile: v.reshape(tm, 2, 32)")


def _runs(items: list[Any], is_tile: Callable[[Any], bool]) -> tuple[list[list[Any]], list[Any]]:
    """Split ``items`` at the tiles: (the runs between them, the tiles in order)."""
    runs: list[list[Any]] = [[]]
    tiles: list[Any] = []
    for it in items:
        if is_tile(it):
            tiles.append(it)
            runs.append([])
        else:
            runs[-1].append(it)
    return runs, tiles


def _prod(values: list[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def _bitcast(h: Any, x: Value, dtype: torch.dtype, text: str, node: ast.AST) -> Value:
    """``v.view(dtype)``: the same bits as a dtype of the same width (``tl.bitcast``)."""
    if torch.bool in (x.dtype, dtype) or x.dtype.itemsize != dtype.itemsize:
        raise h.err(KernelTypeError, f"{text}: a block is viewed only as a dtype of the same "
                    f"width ({x.dtype} is {x.dtype.itemsize} bytes, {dtype} "
                    f"{dtype.itemsize}; bool has no bits to view)", hint="view the tensor in "
                    "host code (x.view(torch.uint8)) and load that, or use .to(dtype) for a "
                    "value cast", node=node)
    return x if dtype == x.dtype else h.b.emit("bitcast", [x], {"dtype": dtype})


def reshape(h: Any, x: Value, sizes: list[Any], node: ast.AST) -> Value:
    """The block ``x`` regrouped to ``sizes`` (tiles, ints, one ``-1``)."""
    from torchship.kernels.frontend.pieces import dim_size

    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = list(sizes[0])
    text = f"`{ast.unparse(node)}`"
    if len(sizes) == 1 and isinstance(sizes[0], torch.dtype):
        return _bitcast(h, x, sizes[0], text, node)
    target: list[Any] = []
    for s in sizes:
        if isinstance(s, TileInfo):
            target.append(s)
        elif isinstance(s, Value) and s.node is not None and s.node.op == "tile_attr" and \
                s.node.attrs["attr"] == "block_size":
            target.append(s.node.attrs["tile"])
        else:
            target.append(h.b.const_int(s, f"a size of {text}", hint=_HINT))
    src_tiles = [d.find().tile for d in x.shape if isinstance(d.find(), TileDim)]
    named = [t for t in target if isinstance(t, TileInfo)]
    if target.count(-1) > 1:
        raise h.err(KernelTypeError, f"{text}: only one size can be -1", node=node)
    src_runs, _ = _runs(list(range(x.ndim)), lambda d: isinstance(x.shape[d].find(), TileDim))
    run_sizes = [_prod([dim_size(h, x, d, text, node) for d in run]) for run in src_runs]
    if len(named) == len(src_tiles) - 1 and -1 in target:
        missing = [t for t in src_tiles if all(t is not n for n in named)]
        guess = list(target)
        guess[guess.index(-1)] = missing[0]
        runs, _ = _runs(guess, lambda s: isinstance(s, TileInfo))
        if [_prod(r) for r in runs] == run_sizes:  # the -1 is that tile's block
            target = guess
            named = [t for t in target if isinstance(t, TileInfo)]
    if len(named) != len(src_tiles) or any(a is not b for a, b in zip(named, src_tiles)):
        have = ", ".join(t.name for t in src_tiles) or "none"
        raise h.err(KernelSyntaxError, f"{text} merges or moves a tile (the block's tiles: "
                    f"{have}): a tile's block has no fixed size to reshape", hint=_MERGE_HINT,
                    node=node)
    dst_runs, _ = _runs(target, lambda s: isinstance(s, TileInfo))
    new_runs: list[list[int]] = []
    for src, dst, n in zip(src_runs, dst_runs, run_sizes):
        known = _prod([v for v in dst if v != -1])
        if -1 in dst:
            dst = [n // known if v == -1 else v for v in dst]
        if _prod(dst) != n or any(v < 1 or v & (v - 1) for v in dst):
            shown = [x.shape[d] for d in src]
            raise h.err(KernelTypeError, f"{text}: the fixed-size dims {shown} (size {n}) "
                        f"cannot become {dst}: Triton blocks are powers of two and a view "
                        "keeps the element count", hint=_HINT, node=node)
        new_runs.append(dst)
    dims: list[Any] = [ConstDim(v) for v in new_runs[0]]
    for tile, run in zip(src_tiles, new_runs[1:]):
        dims.append(tile.dim)
        dims.extend(ConstDim(v) for v in run)
    if len(dims) == x.ndim and all(a.same(b) for a, b in zip(dims, x.shape)):
        return x
    return h.b.emit("regroup", [x], {"dims": tuple(dims)})
