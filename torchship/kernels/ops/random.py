"""Random numbers in device code: ``ts.rand(shape, seed)``, uniform float32 in [0, 1), and
``ts.randn(shape, seed)``, standard normal float32.

The stream is Triton's ``tl.rand``/``tl.randn`` (Box-Muller of Philox's first two words): Philox-4x32 with 10 rounds, keyed by the 64-bit seed,
counter = the element's position in the whole iteration space (row-major over the shape's
dims: a tile's absolute index scaled by the extents of the dims after it), converted like
``tl.rand`` does. Positions do not depend on block sizes, so every config draws the same
numbers, and :func:`philox_uniform` reproduces them bit for bit in reference mode
(:func:`philox_normal` to float32 rounding: log/cos may differ in the last bit). The rounds
are written inline (Triton's interpreter cannot call ``tl.rand``'s own ``@jit`` helpers from
a kernel), with only ``tl.math.umulhi``, 32-bit unsigned multiply, xor and add: the same code
runs in the interpreter and on Triton 3.6+ GPUs. Counters are 32-bit: positions must stay
below 2**32. The stream is not torch's generator (``torch.rand`` draws differ).

Example:
    >>> import torch
    >>> philox_uniform(0, torch.arange(3)).tolist() == philox_uniform(0, torch.arange(3)).tolist()
    True
"""

from __future__ import annotations

from typing import Any

import torch

from torchship.kernels.ir import ConstDim, FullDim, TileDim
from torchship.kernels.ops import OpDef, register

_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUNDS = 10
_SCALE = 4.6566127342e-10  # tl.rand's: the largest int32 times it stays below 1.0
_M32 = 0xFFFFFFFF
_TWO_PI = 6.283185307179586


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of ``a * b`` (``b`` holds uint32 values in int64), without
    overflowing int64: ``b`` is split into 16-bit halves."""
    hi_part, lo_part = a * (b >> 16), a * (b & 0xFFFF)
    hi = (hi_part + (lo_part >> 16)) >> 16
    lo = (((hi_part & 0xFFFF) << 16) + lo_part) & _M32
    return hi, lo


def _philox(seed: int, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first two Philox-4x32-10 output words (uint32 values in int64) for counters
    ``(offset, 0, 0, 0)`` and key ``seed``."""
    c0 = offsets.to(torch.int64) & _M32
    c1 = torch.zeros_like(c0)
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    k0, k1 = seed & _M32, (seed >> 32) & _M32
    for _ in range(_ROUNDS):
        hi_b, lo_b = _mulhilo(_ROUND_B, c2)
        hi_a, lo_a = _mulhilo(_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _KEY_A) & _M32, (k1 + _KEY_B) & _M32
    return c0, c1


def _uniform(c: torch.Tensor) -> torch.Tensor:
    x = torch.where(c >= 2**31, _M32 - c, c)  # int32 bitcast, then ~x for negatives
    return x.to(torch.float32) * torch.tensor(_SCALE, dtype=torch.float32)


def philox_uniform(seed: int, offsets: torch.Tensor) -> torch.Tensor:
    """``tl.rand(seed, offsets)`` in torch: float32 in [0, 1), bit-identical to the kernel.

    Example:
        >>> u = philox_uniform(7, torch.arange(10_000))
        >>> bool((u >= 0).all() and (u < 1).all()), round(u.mean().item(), 1)
        (True, 0.5)
    """
    return _uniform(_philox(seed, offsets)[0])


def philox_normal(seed: int, offsets: torch.Tensor) -> torch.Tensor:
    """``tl.randn(seed, offsets)`` in torch: standard normal float32 (Box-Muller).

    Example:
        >>> z = philox_normal(7, torch.arange(10_000))
        >>> round(z.mean().item(), 1), round(z.std().item(), 1)
        (0.0, 1.0)
    """
    c0, c1 = _philox(seed, offsets)
    u1 = torch.clamp_min(_uniform(c0), 1.0e-7)
    th = _uniform(c1) * torch.tensor(_TWO_PI, dtype=torch.float32)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(th)


def _infer(inputs: list[Any], attrs: dict[str, Any]) -> tuple[Any, torch.dtype]:
    return tuple(attrs["shape"]), torch.float32


def extent_of(d: Any) -> Any:
    """The extent of a dim in the iteration space: a tile's loop end, a whole dim's size, a
    literal size (an operand: python int or scalar Value).

    Example:
        >>> extent_of(ConstDim(8))
        8
    """
    r = d.find()
    if isinstance(r, TileDim):
        return r.tile.end
    if isinstance(r, FullDim):
        return r.size
    assert isinstance(r, ConstDim)
    return r.n


def _emit(cg: Any, node: Any, args: list[str]) -> str:
    shape = node.attrs["shape"]
    rank = len(shape)
    seed, extents = args[0], args[1:]
    terms = []
    for pos, d in enumerate(shape):
        idx = cg.dim_info(d)[0]
        if isinstance(d.find(), ConstDim):
            idx = f"tl.arange(0, {d.find().n})"
        scale = " * ".join(f"({e})" for e in extents[pos + 1:])
        term = cg.expand(idx, pos, rank)
        terms.append(f"{term} * {scale}" if scale else term)
    c0 = cg.fresh("rng_c0")
    cg.line(f"{c0} = ({' + '.join(terms)}).to(tl.uint32)")
    c1, c2, c3, k0, k1 = (cg.fresh(n) for n in ("rng_c1", "rng_c2", "rng_c3", "rng_k0",
                                                   "rng_k1"))
    zero = f"{c0} * 0"
    cg.line(f"{c1} = {zero}")
    cg.line(f"{c2} = {zero}")
    cg.line(f"{c3} = {zero}")
    s = cg.fresh("rng_seed")
    cg.line(f"{s} = tl.cast({seed}, tl.uint64)")
    cg.line(f"{k0} = {zero} + ({s} & {_M32}).to(tl.uint32)")
    cg.line(f"{k1} = {zero} + (({s} >> 32) & {_M32}).to(tl.uint32)")
    t0, t2 = cg.fresh("rng_t0"), cg.fresh("rng_t2")
    cg.line(f"for _ in tl.static_range({_ROUNDS}):  # Philox-4x32 rounds, as tl.rand")
    cg.line(f"    {t0}, {t2} = {c0}, {c2}")
    cg.line(f"    {c0} = tl.math.umulhi({c2}, {_ROUND_B}) ^ {c1} ^ {k0}")
    cg.line(f"    {c2} = tl.math.umulhi({t0}, {_ROUND_A}) ^ {c3} ^ {k1}")
    cg.line(f"    {c1} = {t2} * {_ROUND_B}")
    cg.line(f"    {c3} = {t0} * {_ROUND_A}")
    cg.line(f"    {k0} = {k0} + {_KEY_A}")
    cg.line(f"    {k1} = {k1} + {_KEY_B}")
    u0 = _emit_uniform(cg, c0)
    if not node.attrs["normal"]:
        return u0
    u1 = _emit_uniform(cg, c1)
    return f"tl.sqrt(-2.0 * tl.log(tl.maximum(1.0e-7, {u0}))) * tl.cos({_TWO_PI} * {u1})"


def _emit_uniform(cg: Any, word: str) -> str:
    x = cg.fresh("rng_x")
    cg.line(f"{x} = {word}.to(tl.int32, bitcast=True)")
    u = cg.fresh("rng_u")
    cg.line(f"{u} = tl.where({x} < 0, -{x} - 1, {x}) * {_SCALE}")
    return u


register(OpDef("rand", _infer, _emit, "create"))
