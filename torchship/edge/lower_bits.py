"""Bit operations without a core op: integer shifts by a constant amount as arithmetic
(``x << k`` is ``x · 2**k``, wrapping like the shift; ``x >> k`` is ``floor(x / 2**k)``, the
arithmetic shift of signed integers, computed in float64, exact while |x| < 2**53; shifts by a
tensor are refused by name), and exclusive or of bools as ``ne``.

Example:
    >>> import torchship.edge.lower_bits  # registers the handlers
    >>> from torchship.edge.lower import HANDLERS
    >>> torch.ops.aten.__rshift__.Scalar in HANDLERS
    True
"""

from __future__ import annotations

import torch

from torchship.edge.lower import Lowering, handles
from torchship.edge.lower import out_dtype as _out_dtype

aten = torch.ops.aten
Node = torch.fx.Node


@handles(aten.__rshift__.Scalar, aten.__lshift__.Scalar, aten.bitwise_right_shift.Tensor_Scalar,
         aten.bitwise_left_shift.Tensor_Scalar, aten.__rshift__.Tensor, aten.__lshift__.Tensor,
         aten.bitwise_right_shift.Tensor, aten.bitwise_left_shift.Tensor)
def _shift(lw: Lowering, node: Node) -> int:
    """``x << k`` / ``x >> k`` for a Python int (or a constant 0-d tensor) ``0 <= k < 63``."""
    k = node.args[1]
    if isinstance(k, Node):
        raise lw.fail(f"shifting by a tensor ({k}) is not supported; shift by a Python int "
                      "(x >> 3) or multiply / floor-divide by powers of two")
    dt = _out_dtype(lw, node)
    if dt in ("F32", "F64", "BOOL") or not isinstance(k, int) or not 0 <= k < 63:
        raise lw.fail(f"shift of a {dt} tensor by {k!r} is not supported (integers by 0 <= k < 63)")
    _, shape = lw.out()
    left = "lshift" in str(node.target) or "left" in str(node.target)
    if left:
        return lw.emit("mul", [lw.tensor(node.args[0], dt), lw.const(1 << k, dt)])
    x = lw.tensor(node.args[0], "F64")
    q = lw.g.emit("div", [x, lw.const(float(1 << k), "F64")], "F64", shape, {}, lw.source)
    q = lw.g.emit("floor", [q], "F64", shape, {}, lw.source)
    return lw.emit("cast", [q], {"dtype": dt})


@handles(aten.bitwise_xor.Tensor, aten.__xor__.Tensor, aten.logical_xor.default, aten.bitwise_xor.Scalar)
def _xor(lw: Lowering, node: Node) -> int:
    """``a ^ b`` of bools / ``logical_xor`` of anything: ``(a != 0) != (b != 0)``."""
    if "logical" not in str(node.target) and _out_dtype(lw, node) != "BOOL":
        raise lw.fail("bitwise xor of integers is not supported (of bools it is); integer bit "
                      "operations other than x & (2**k - 1) and shifts are not core ops")
    return lw.emit("ne", [lw.tensor(node.args[0], "BOOL"), lw.tensor(node.args[1], "BOOL")])
