"""The tile language: the names a kernel author writes (``ts.tile``, ``ts.zeros``, ...).

Every name here is a real Python callable with *reference-mode* semantics: executed eagerly
(``TORCHSHIP_INTERPRET=1``, see :mod:`torchship.kernels.ref`) a kernel body runs tile by tile
with ordinary torch ops, on any device. The compiler never calls these functions: it recognises
them by identity when it resolves names in a kernel's globals and emits Triton instead.

Reference-mode semantics, in short:

- ``ts.tile(n)`` yields :class:`Tile` objects covering ``range(n)`` in chunks of the block
  size; the last tile is ragged (``tile.end == n``). ``ts.tile(begin, end)`` covers
  ``range(begin, end)``; ``ts.tile([m, n])`` / ``ts.tile(x.size())`` yields tuples of tiles,
  one per dimension, in row-major order.
- A tensor indexed by a tile behaves like it is indexed by ``slice(tile.begin, tile.end)``:
  ``x[tm, :]`` loads a block (a copy, like a device load), ``out[tm, tn] = v`` stores one.
  Ints, ``None`` and ``:`` mix freely with tiles.
- ``tile.index`` is ``arange(tile.begin, tile.end)`` (int32, on the kernel's device) and can be
  used in arithmetic, e.g. causal masks ``tm.index[:, None] >= tn.index[None, :]``.

Example:
    >>> import torch
    >>> import torchship.kernels.language as tl
    >>> x = torch.arange(10.0)
    >>> [float(x[t].sum()) for t in tl.tile(10, block_size=4)]
    [6.0, 22.0, 17.0]
"""

from __future__ import annotations

import contextvars
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from torchship.kernels.combine_args import combine_args
from torchship.kernels.frontend.captures import NoHostArithmetic

__all__ = [
    "BlockSizeSymbol",
    "Tile",
    "Tunable",
    "atomic_add",
    "dot",
    "full",
    "grid",
    "register_block_size",
    "register_tunable",
    "static_range",
    "tile",
    "zeros",
]

#: Block size used in reference mode when a loop gives none (results never depend on it).
DEFAULT_REF_BLOCK_SIZE = 64

# Reference-mode state, set by torchship.kernels.ref.run (contextvars: thread/async safe).
_ref_block_size: contextvars.ContextVar[int] = contextvars.ContextVar(
    "torchship_ref_block_size", default=DEFAULT_REF_BLOCK_SIZE
)
_ref_device: contextvars.ContextVar[torch.device | None] = contextvars.ContextVar(
    "torchship_ref_device", default=None
)
_ref_tunables: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "torchship_ref_tunables", default=None
)


def _device() -> torch.device:
    dev = _ref_device.get()
    return dev if dev is not None else torch.device("cpu")


# --------------------------------------------------------------------------------------------
# block sizes and tunables
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BlockSizeSymbol(NoHostArithmetic):
    """A block size chosen by the config, shared by every loop that names it.

    Created by :func:`register_block_size`; pass it as ``block_size=`` to :func:`tile`.
    Identity matters: two loops using the same symbol always get the same block size.

    Example:
        >>> bs = register_block_size(16, 128)
        >>> bs.lo, bs.hi
        (16, 128)
    """

    lo: int
    hi: int

    def ref_value(self) -> int:
        """The block size this symbol takes in reference mode (the default, clamped).

        Example:
            >>> register_block_size(1, 8).ref_value()
            8
        """
        return max(self.lo, min(self.hi, _ref_block_size.get()))

    def __repr__(self) -> str:
        return f"BlockSizeSymbol(lo={self.lo}, hi={self.hi})"


def register_block_size(lo: int, hi: int) -> BlockSizeSymbol:
    """Declare a tunable block size in ``[lo, hi]`` to share between several tile loops.

    Example:
        >>> bk = register_block_size(32, 256)
        >>> [t.block_size for t in tile(100, block_size=bk)][:1] == [bk.ref_value()]
        True
    """
    lo_i, hi_i = _as_int(lo, "register_block_size(lo)"), _as_int(hi, "register_block_size(hi)")
    if lo_i < 1 or hi_i < lo_i:
        raise ValueError(
            f"register_block_size(lo={lo_i}, hi={hi_i}): expected 1 <= lo <= hi"
        )
    return BlockSizeSymbol(lo_i, hi_i)


@dataclass(frozen=True)
class Tunable:
    """A named user knob with a finite list of choices (see :func:`register_tunable`)."""

    name: str
    choices: tuple[Any, ...]


def register_tunable(name: str, choices: Sequence[Any]) -> Any:
    """Declare a user knob; returns its value (reference mode: the first choice).

    The autotuner searches ``choices``; a kernel must compute the same result for every one.
    :func:`torchship.kernels.ref.run` accepts ``tunables={name: value}`` to try others.

    Example:
        >>> register_tunable("unroll", [1, 2, 4])
        1
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_tunable: name must be a non-empty str, got {name!r}")
    options = tuple(choices)
    if not options:
        raise ValueError(f"register_tunable({name!r}): choices must not be empty")
    chosen = (_ref_tunables.get() or {}).get(name, options[0])
    if chosen not in options:
        raise ValueError(f"register_tunable({name!r}): {chosen!r} is not one of {options}")
    return chosen


# --------------------------------------------------------------------------------------------
# tiles
# --------------------------------------------------------------------------------------------


class _BlockSize(int):
    """``tile.block_size`` in reference mode: an int that, as a ``ts.zeros``/``ts.full`` shape
    entry, stands for the tile's valid extent, as the compiled kernel's masked block does."""

    count: int

    def __new__(cls, block_size: int, count: int) -> _BlockSize:
        out = super().__new__(cls, block_size)
        out.count = count
        return out


class Tile:
    """One block of one iteration dimension: the half-open range ``[begin, end)``.

    ``block_size`` is the nominal size (the compiled kernel's constexpr); ``end - begin`` is
    smaller on the ragged last tile. ``id`` is the tile's number within its loop; ``stop`` is
    the loop's end (the dim's extent for :func:`rand`).
    Indexing a tensor with a tile acts like ``slice(begin, end)``.

    Example:
        >>> t = Tile(64, 67, 64, 1)
        >>> t.begin, t.end, t.block_size, t.id, t.index.tolist()
        (64, 67, 64, 1, [64, 65, 66])
    """

    __slots__ = ("_index", "begin", "block_size", "end", "id", "stop")

    def __init__(self, begin: int, end: int, block_size: int, id: int = 0,
                 stop: int | None = None) -> None:
        self.begin = int(begin)
        self.end = int(end)
        self.stop = self.end if stop is None else int(stop)
        self.block_size = _BlockSize(int(block_size), self.end - self.begin)
        self.id = int(id)
        self._index: torch.Tensor | None = None

    @property
    def index(self) -> torch.Tensor:
        """``arange(begin, end)`` as an int32 tensor on the kernel's device."""
        if self._index is None:
            self._index = torch.arange(self.begin, self.end, dtype=torch.int32, device=_device())
        return self._index

    @property
    def count(self) -> int:
        """Number of valid elements: ``end - begin`` (less than block_size on a ragged tile)."""
        return self.end - self.begin

    def __repr__(self) -> str:
        return f"Tile(begin={self.begin}, end={self.end}, block_size={self.block_size})"

    def __index__(self) -> int:
        """A tile used as a size (``torch.zeros([tm, 16])``) is its actual extent."""
        return self.end - self.begin

    def as_slice(self) -> slice:
        """The slice this tile stands for when indexing a tensor.

        Example:
            >>> Tile(0, 3, 4).as_slice()
            slice(0, 3, None)
        """
        return slice(self.begin, self.end)

    @classmethod
    def __torch_function__(
        cls,
        func: Callable[..., Any],
        types: tuple[type, ...],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        # torch asks index objects that define __torch_function__ to handle x[...] and
        # x[...] = v: rewrite tiles into slices, then run the plain op.
        if func is torch.Tensor.__getitem__:
            tensor, index = args
            out = tensor[_convert_index(index)]
            # A device load is a copy: never hand back a view that aliases the input.
            return out.clone() if out._is_view() else out
        if func is torch.Tensor.__setitem__:
            tensor, index, value = args
            tensor[_convert_index(index)] = value
            return None
        if func in (torch.zeros, torch.ones, torch.empty, torch.full, torch.broadcast_to,
                    torch.Tensor.expand, torch.Tensor.reshape, torch.Tensor.view, torch.reshape,
                    torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_empty,
                    torch.Tensor.new_full):
            kwargs = dict(kwargs or {})
            if func in (torch.zeros, torch.ones, torch.empty, torch.full):
                kwargs.setdefault("device", _device())
            def size(a: Any) -> Any:  # each tile its actual extent
                if isinstance(a, (list, tuple)):
                    return type(a)(size(x) for x in a)
                return a.__index__() if isinstance(a, Tile) else a

            return func(*[size(a) for a in args], **kwargs)
        name = getattr(func, "__name__", repr(func))
        raise TypeError(
            f"{name}: a Tile only indexes tensors (x[tile, :], out[tm, tn] = v) or gives shapes "
            "(ts.zeros([tm, tn])); use tile.index for its positions as a tensor"
        )


def _convert_index(index: Any) -> Any:
    if isinstance(index, Tile):
        return index.as_slice()
    if isinstance(index, tuple):
        return tuple(_convert_index(i) for i in index)
    if isinstance(index, list) and any(isinstance(i, Tile) for i in index):
        return tuple(_convert_index(i) for i in index)
    return index


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{what}: expected an int, got bool {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    if hasattr(value, "__index__"):
        return int(value.__index__())
    raise TypeError(f"{what}: expected an int, got {type(value).__name__} {value!r}")


def _resolve_block_size(bs: Any, dim: int) -> int:
    if bs is None:
        return _ref_block_size.get()
    if isinstance(bs, BlockSizeSymbol):
        return bs.ref_value()
    value = _as_int(bs, f"tile(block_size=) for dim {dim}")
    if value < 1 or value & (value - 1):
        # the compiled kernel needs a power of two (tl.arange); keep the oracle as strict
        raise ValueError(
            f"tile(block_size={value}) for dim {dim}: must be a power of two (1, 2, 4, ...)"
        )
    return value


def _ranges(
    begin_or_sizes: Any, end: Any, what: str
) -> tuple[list[int], list[int], bool]:
    """Normalise (begin_or_sizes, end) into per-dim begins/ends and whether it was multi-dim."""
    multi = isinstance(begin_or_sizes, (list, tuple, torch.Size))
    if end is None:
        sizes = list(begin_or_sizes) if multi else [begin_or_sizes]
        ends = [_as_int(s, f"{what}(size)") for s in sizes]
        begins = [0] * len(ends)
    else:
        if multi != isinstance(end, (list, tuple, torch.Size)):
            raise TypeError(f"{what}(begin, end): begin and end must both be ints or sequences")
        b_list = list(begin_or_sizes) if multi else [begin_or_sizes]
        e_list = list(end) if multi else [end]
        if len(b_list) != len(e_list):
            raise ValueError(
                f"{what}(begin, end): {len(b_list)} begins but {len(e_list)} ends"
            )
        begins = [_as_int(b, f"{what}(begin)") for b in b_list]
        ends = [_as_int(e, f"{what}(end)") for e in e_list]
    if multi and not begins:
        raise ValueError(f"{what}([]): needs at least one dimension")
    return begins, ends, multi


def tile(
    begin_or_sizes: Any, end: Any = None, /, *, block_size: Any = None
) -> Iterator[Tile | tuple[Tile, ...]]:
    """Iterate over tiles of one or more dimensions.

    ``tile(n)``, ``tile(begin, end)``, ``tile([m, n])`` / ``tile(x.size())`` (a tuple of tiles
    per step, row-major), ``tile([b0, b1], [e0, e1])``. ``block_size`` is an int, a
    :class:`BlockSizeSymbol`, or (multi-dim) a list of those/None; ``None`` lets the config
    choose (reference mode: 64).

    Example:
        >>> [(t.begin, t.end) for t in tile(2, 9, block_size=4)]
        [(2, 6), (6, 9)]
        >>> [(a.begin, b.begin) for a, b in tile([3, 2], block_size=2)]
        [(0, 0), (2, 0)]
    """
    begins, ends, multi = _ranges(begin_or_sizes, end, "tile")
    ndim = len(begins)
    if isinstance(block_size, (list, tuple)):
        if len(block_size) != ndim:
            raise ValueError(
                f"tile: block_size has {len(block_size)} entries for {ndim} dimensions"
            )
        sizes = [_resolve_block_size(b, d) for d, b in enumerate(block_size)]
    else:
        sizes = [_resolve_block_size(block_size, d) for d in range(ndim)]
    per_dim = [
        [Tile(s, min(s + bs, e), bs, i, e) for i, s in enumerate(range(b, e, bs))]
        for b, e, bs in zip(begins, ends, sizes)
    ]
    if not multi:
        yield from per_dim[0]
        return
    yield from itertools.product(*per_dim)


def grid(begin_or_sizes: Any, end: Any = None, /) -> Iterator[int | tuple[int, ...]]:
    """Iterate over scalar indices (one program per index when compiled).

    Example:
        >>> list(grid(3)), list(grid(1, 3)), list(grid([2, 2]))
        ([0, 1, 2], [1, 2], [(0, 0), (0, 1), (1, 0), (1, 1)])
    """
    begins, ends, multi = _ranges(begin_or_sizes, end, "grid")
    ranges = [range(b, e) for b, e in zip(begins, ends)]
    if not multi:
        yield from ranges[0]
        return
    yield from itertools.product(*ranges)


def static_range(begin_or_end: int, end: int | None = None, /) -> range:
    """A loop unrolled at compile time (Helion's ``hl.static_range``): the loop variable is a
    python int in device code, so it can pick an entry of a list of host views
    (``views[k][tm, tn]``) or a constant. Bounds are literals or int arguments (the kernel
    is specialised on their values); in host code and reference mode it is ``range``.

    Example:
        >>> list(static_range(3)), list(static_range(1, 3))
        ([0, 1, 2], [1, 2])
    """
    return range(begin_or_end) if end is None else range(begin_or_end, end)


# --------------------------------------------------------------------------------------------
# device-side helpers
# --------------------------------------------------------------------------------------------


def _shape(shape: Any, what: str) -> list[int]:
    if isinstance(shape, (Tile, int)) or (isinstance(shape, torch.Tensor) and shape.ndim == 0):
        shape = [shape]
    dims: list[int] = []
    for i, s in enumerate(shape):
        if isinstance(s, Tile):
            dims.append(s.end - s.begin)
        elif isinstance(s, _BlockSize):
            dims.append(s.count)
        elif isinstance(s, BlockSizeSymbol):
            dims.append(s.ref_value())
        else:
            dims.append(_as_int(s, f"{what}: shape entry {i}"))
    return dims


def zeros(shape: Sequence[Tile | int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A block of zeros; tile entries in ``shape`` take the tile's actual size.

    Example:
        >>> t = Tile(0, 3, 4)
        >>> zeros([t, 2]).shape
        torch.Size([3, 2])
    """
    return torch.zeros(_shape(shape, "zeros"), dtype=dtype, device=_device())


def full(
    shape: Sequence[Tile | int], value: float | int | bool, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A block filled with ``value``; tile entries take the tile's actual size.

    Example:
        >>> full([Tile(0, 2, 4)], float("-inf")).tolist()
        [-inf, -inf]
    """
    if isinstance(value, torch.Tensor):
        value = value.item()
    return torch.full(_shape(shape, "full"), value, dtype=dtype, device=_device())


def rand(shape: Sequence[Tile | int], seed: int) -> torch.Tensor:
    """Uniform float32 block in [0, 1) from Philox keyed by ``seed`` (Triton's ``tl.rand``).

    Each element's counter is its position in the iteration space (row-major over the
    shape's dims, tiles at their absolute index), so the numbers do not depend on block sizes
    and reference mode draws exactly what the compiled kernel draws (not torch's stream).

    Example:
        >>> a = rand([Tile(0, 4, 4, 0, 8), 3], seed=1)
        >>> b = rand([Tile(4, 8, 4, 1, 8), 3], seed=1)
        >>> a.shape, bool((a != b).all()), bool((a == rand([Tile(0, 4, 4, 0, 8), 3], 1)).all())
        (torch.Size([4, 3]), True, True)
    """
    from torchship.kernels.ops.random import philox_uniform

    seed = _as_int(seed, "rand: seed")
    return philox_uniform(seed, _rand_offsets(shape, "rand")).to(_device())


def randn(shape: Sequence[Tile | int], seed: int) -> torch.Tensor:
    """Standard normal float32 block (Triton's ``tl.randn``: Box-Muller of the Philox words
    :func:`rand` uses), positioned like :func:`rand`.

    Example:
        >>> z = randn([Tile(0, 64, 64, 0, 64), 64], seed=3)
        >>> z.shape, abs(z.mean().item()) < 0.1
        (torch.Size([64, 64]), True)
    """
    from torchship.kernels.ops.random import philox_normal

    seed = _as_int(seed, "randn: seed")
    return philox_normal(seed, _rand_offsets(shape, "randn")).to(_device())


def _rand_offsets(shape: Any, what: str) -> torch.Tensor:
    """Each element's position in the iteration space (row-major over the shape's dims)."""
    if isinstance(shape, (Tile, int)):
        shape = [shape]
    offsets = torch.zeros((), dtype=torch.int64)
    for i, s in enumerate(shape):
        if isinstance(s, _BlockSize):
            raise TypeError(f"{what}: pass the tile itself, not tile.block_size")
        if isinstance(s, Tile):
            idx, extent = s.index.to(torch.int64).cpu(), s.stop
        else:
            extent = _as_int(s, f"{what}: shape entry {i}")
            idx = torch.arange(extent)
        offsets = offsets[..., None] * extent + idx
    return offsets


def reduce(combine_fn: Callable[..., Any], input: Any, dim: int, other: Any = 0,
           keep_dims: bool = False) -> Any:
    """Reduce ``input`` (a block or a tuple of same-shape blocks) along ``dim`` with
    ``combine_fn(a, b)`` (of two values, or two tuples), folding left to right. ``other`` is
    what the compiled kernel puts in padded lanes: it must be ``combine_fn``'s identity.

    Example:
        >>> def mul(a, b):
        ...     return a * b
        >>> reduce(mul, torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), 1).tolist()
        [6.0, 120.0]
    """
    items = input if isinstance(input, tuple) else (input,)
    acc = tuple(x.select(dim, 0) for x in items)
    for i in range(1, items[0].shape[dim]):
        acc = _combine(combine_fn, acc, tuple(x.select(dim, i) for x in items), input)
    if keep_dims:
        acc = tuple(a.unsqueeze(dim) for a in acc)
    return acc if isinstance(input, tuple) else acc[0]


def associative_scan(combine_fn: Callable[..., Any], input: Any, dim: int,
                     reverse: bool = False, other: Any = 0) -> Any:
    """Inclusive scan of ``input`` (a block or a tuple of blocks) along ``dim`` with
    ``combine_fn(a, b)``; ``reverse`` scans from the end (the compiled kernel then puts
    ``other``, which must be ``combine_fn``'s identity, in padded lanes).

    Example:
        >>> def add(a, b):
        ...     return a + b
        >>> associative_scan(add, torch.tensor([1, 2, 3]), 0, reverse=True).tolist()
        [6, 5, 3]
    """
    items = input if isinstance(input, tuple) else (input,)
    n = items[0].shape[dim]
    order = range(n - 1, -1, -1) if reverse else range(n)
    outs: list[tuple[torch.Tensor, ...]] = []
    for i in order:
        cur = tuple(x.select(dim, i) for x in items)
        outs.append(cur if not outs else _combine(combine_fn, outs[-1], cur, input))
    if reverse:
        outs.reverse()
    result = tuple(torch.stack([o[k] for o in outs], dim) for k in range(len(items)))
    return result if isinstance(input, tuple) else result[0]


def _combine(fn: Callable[..., Any], a: tuple[Any, ...], b: tuple[Any, ...],
             like: Any) -> tuple[Any, ...]:
    out = fn(*combine_args(fn, a, b)) if isinstance(like, tuple) else (fn(a[0], b[0]),)
    return tuple(o.to(x.dtype) if isinstance(o, torch.Tensor) else torch.full_like(x, o)
                 for o, x in zip(out, a))


def _acc_dtype(*dtypes: torch.dtype) -> torch.dtype:
    # float32, or float64 when an operand is: every narrower float (fp16, bf16, fp8 -- which
    # torch refuses to promote) accumulates in float32, as tl.dot does
    return torch.float64 if torch.float64 in dtypes else torch.float32


def dot(a: torch.Tensor, b: torch.Tensor, acc: torch.Tensor | None = None) -> torch.Tensor:
    """Matrix product with float32 (or wider) accumulation: ``acc + a @ b``.

    2-D or batched 3-D operands. Without ``acc`` the result is float32 (float64 if an input
    is float64); with ``acc`` it has ``acc``'s dtype.

    Example:
        >>> a = torch.ones(2, 3, dtype=torch.float16)
        >>> dot(a, a.T).dtype, dot(a, a.T)[0, 0].item()
        (torch.float32, 3.0)
    """
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError("dot(a, b): a and b must be tensors (blocks loaded from tensors)")
    if a.ndim not in (2, 3) or b.ndim != a.ndim:
        raise ValueError(
            f"dot: expected two 2-D or two 3-D blocks, got shapes {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    dtypes = [a.dtype, b.dtype] + ([acc.dtype] if acc is not None else [])
    work = _acc_dtype(*dtypes)
    prod = torch.matmul(a.to(work), b.to(work))
    if acc is None:
        return prod
    return (acc.to(work) + prod).to(acc.dtype)


def atomic_add(target: torch.Tensor, index: Sequence[Any], value: Any) -> None:
    """``target[index] += value`` atomically; repeated indices (from tensors) all add up.

    ``index`` holds one entry per dimension of ``target``: tiles, ints, ``:`` or index tensors.

    Example:
        >>> out = torch.zeros(2, 3)
        >>> atomic_add(out, [Tile(0, 2, 2), 1], torch.ones(2))
        >>> out[:, 1].tolist()
        [1.0, 1.0]
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"atomic_add: target must be a tensor, got {type(target).__name__}")
    entries = tuple(index) if isinstance(index, (list, tuple)) else (index,)
    real = [e for e in entries if e is not None]
    if len(real) != target.ndim:
        raise ValueError(
            f"atomic_add: index has {len(real)} entries for a {target.ndim}-D target "
            f"(one per dimension, e.g. [tile_m, 0])"
        )
    idx = _convert_index(entries)
    if not any(isinstance(e, torch.Tensor) for e in idx):
        view = target[idx]
        view.add_(torch.as_tensor(value, device=target.device).to(target.dtype))
        return
    # Tensor indices may repeat: scatter through logical flat positions with index_add_.
    positions = torch.arange(target.numel(), device=target.device).view(target.shape)[idx]
    vals = torch.as_tensor(value, device=target.device).to(target.dtype).expand(positions.shape)
    if target.is_contiguous():
        target.view(-1).index_add_(0, positions.reshape(-1), vals.reshape(-1))
    else:
        flat = target.reshape(-1).clone()
        flat.index_add_(0, positions.reshape(-1), vals.reshape(-1))
        target.copy_(flat.view(target.shape))

