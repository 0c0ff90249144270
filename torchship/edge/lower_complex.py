"""ATen -> core op handlers, part 6: complex tensors as (real, imaginary) pairs.

The program format has no complex dtype. While lowering, a complex tensor of shape ``S`` is a
real tensor of shape ``S + [2]`` (``[..., 0]`` the real part, ``[..., 1]`` the imaginary part,
float32 for complex64 and float64 for complex128) -- exactly the bytes ``torch.view_as_real``
shows, so ``view_as_complex`` and ``view_as_real`` cost nothing and complex buffers are stored
as their real view. This covers Llama/Meta-style rotary embeddings (``view_as_complex``, a
product with ``freqs_cis`` from ``torch.polar``, ``view_as_real``, ``flatten``). Arithmetic
becomes real arithmetic on the parts (``(a + bi)(c + di) = (ac - bd) + (ad + bc)i``); the
shape ops of ``lower_shapes`` handle pairs as they are. Any other op that reads or produces
a complex tensor is refused by ``Lowering.run``, naming it.

Example:
    >>> from torchship.edge.lower import COMPLEX_HANDLERS
    >>> import torchship.edge.lower_complex  # registers
    >>> torch.ops.aten.view_as_complex.default in COMPLEX_HANDLERS
    True
"""

from __future__ import annotations

from typing import Any

import torch

from torchship.edge import lower_shapes  # noqa: F401  (registers the shape handlers reused below)
from torchship.edge.lower import COMPLEX_HANDLERS, HANDLERS, Lowering, handles, is_complex
from torchship.edge.lower_nn import Emit

aten = torch.ops.aten
Node = torch.fx.Node

#: a part of a complex operand: a value id (trailing axis of 1), a Python number, or None (zero)
Part = int | float | None
_PAIR_DTYPE = {torch.complex64: "F32", torch.complex128: "F64"}


# shape ops and indexing: the real handlers, which keep a pair's trailing axis in place
for _t in (aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.unsqueeze.default,
           aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, aten.flatten.using_ints,
           aten.view_copy.default, aten.permute.default, aten.transpose.int, aten.t.default,
           aten.permute_copy.default, aten.expand.default, aten.expand_copy.default,
           aten.slice.Tensor, aten.slice_copy.Tensor, aten.select.int, aten.cat.default,
           aten.concat.default, aten.index.Tensor, aten._unsafe_index.Tensor, aten.index_select.default):
    COMPLEX_HANDLERS[_t] = HANDLERS[_t]


@handles(aten.view_as_complex.default, aten.view_as_real.default, aten.resolve_conj.default,
         aten.resolve_neg.default, complex_values=True)
def _same_bytes(lw: Lowering, node: Node) -> int:
    """The pair tensor is the real view and the complex value at once."""
    return lw.val(node.args[0])


class _Parts:
    """Splitting and joining pairs for one node's lowering (the node's real dtype)."""

    def __init__(self, lw: Lowering, node: Node) -> None:
        self.lw = lw
        z = node if is_complex(node) else next(a for a in node.all_input_nodes if is_complex(a))
        dt = z.meta["val"].dtype
        if dt not in _PAIR_DTYPE:
            raise lw.fail(f"{dt} is not supported (complex64 and complex128 are)")
        self.e = Emit(lw, _PAIR_DTYPE[dt])

    def of(self, arg: Any) -> tuple[Part, Part]:
        """(real, imaginary) of an operand: complex or real tensor, or Python number."""
        lw, e = self.lw, self.e
        if not isinstance(arg, Node):
            z = complex(arg)
            return (z.real or None), (z.imag or None)
        if not is_complex(arg):
            x = lw.tensor(arg, e.dt)
            shape = lw.shape_of(x) + [1]
            return e("reshape", [x], shape, {"shape": shape}), None
        z = lw.val(arg)
        if lw.g.values[z].dtype != e.dt:
            z = e("cast", [z], lw.shape_of(z), {"dtype": e.dt})
        shape = lw.shape_of(z)[:-1] + [1]
        return tuple(e("slice", [z], shape, {"axis": -1, "start": k, "end": k + 1, "step": 1}) for k in (0, 1))

    def op(self, name: str, a: Part, b: Part) -> Part:
        """``a <name> b`` with zero (None) and Python-number operands folded away."""
        if name == "mul" and (a is None or b is None):
            return None
        if name in ("add", "sub") and b is None:
            return a
        if name == "add" and a is None:
            return b
        if name == "sub" and a is None:
            return self.op("mul", b, -1.0)
        if not isinstance(a, int) and not isinstance(b, int):
            return {"add": a + b, "sub": a - b, "mul": a * b, "div": a / b}[name]
        if name == "mul" and isinstance(b, float) and b in (1.0, -1.0):
            return a if b == 1.0 else self.e("neg", [a])
        return self.e(name, [self.tensor(a), self.tensor(b)])

    def tensor(self, p: Part) -> int:
        return p if isinstance(p, int) else self.e.c(0.0 if p is None else p)

    def join(self, re: Part, im: Part) -> int:
        """The pair tensor of the node's shape from two parts (broadcast to it)."""
        lw, e = self.lw, self.e
        out = lw.out()[1]
        half = out[:-1] + [1]
        parts = []
        for p in (re, im):
            p = self.tensor(p)
            if lw.shape_of(p) != half:
                p = e("expand", [p], half, {"shape": half})
            parts.append(p)
        return e("concat", parts, out, {"axis": -1})


@handles(aten.mul.Tensor, aten.mul.Scalar, aten.div.Tensor, aten.div.Scalar, aten.add.Tensor,
         aten.add.Scalar, aten.sub.Tensor, aten.sub.Scalar, aten.reciprocal.default, complex_values=True)
def _arith(lw: Lowering, node: Node) -> int:
    """``+ - * /`` with a complex operand (``reciprocal`` as ``1 / z``), on the parts."""
    name = str(node.target).split(".")[1]
    if node.kwargs.get("alpha", 1) != 1 or node.kwargs.get("rounding_mode") is not None:
        raise lw.fail(f"complex {name} with alpha/rounding_mode is not supported")
    pp = _Parts(lw, node)
    args = [1.0, node.args[0]] if name == "reciprocal" else node.args[:2]
    name = "div" if name == "reciprocal" else name
    (a, b), (c, d) = pp.of(args[0]), pp.of(args[1])
    if name in ("add", "sub"):
        re, im = pp.op(name, a, c), pp.op(name, b, d)
    elif name == "mul":
        re = pp.op("sub", pp.op("mul", a, c), pp.op("mul", b, d))
        im = pp.op("add", pp.op("mul", a, d), pp.op("mul", b, c))
    else:  # (a + bi) / (c + di) = ((ac + bd) + (bc - ad)i) / (c² + d²)
        den = pp.op("add", pp.op("mul", c, c), pp.op("mul", d, d))
        re = pp.op("div", pp.op("add", pp.op("mul", a, c), pp.op("mul", b, d)), den)
        im = pp.op("div", pp.op("sub", pp.op("mul", b, c), pp.op("mul", a, d)), den)
    return pp.join(re, im)


@handles(aten.polar.default, complex_values=True)
def _polar(lw: Lowering, node: Node) -> int:
    """``abs · (cos angle + i sin angle)``."""
    pp = _Parts(lw, node)
    r, theta = pp.of(node.args[0])[0], pp.of(node.args[1])[0]
    return pp.join(pp.op("mul", r, pp.e("cos", [theta])), pp.op("mul", r, pp.e("sin", [theta])))


@handles(aten.complex.default, complex_values=True)
def _complex(lw: Lowering, node: Node) -> int:
    pp = _Parts(lw, node)
    return pp.join(pp.of(node.args[0])[0], pp.of(node.args[1])[0])


@handles(aten.exp.default, complex_values=True)
def _exp(lw: Lowering, node: Node) -> int:
    """``e^a · (cos b + i sin b)``."""
    pp = _Parts(lw, node)
    a, b = pp.of(node.args[0])
    m = pp.e("exp", [a])
    return pp.join(pp.op("mul", m, pp.e("cos", [b])), pp.op("mul", m, pp.e("sin", [b])))


@handles(aten._conj.default, aten.conj_physical.default, aten.neg.default, complex_values=True)
def _conj_neg(lw: Lowering, node: Node) -> int:
    pp = _Parts(lw, node)
    a, b = pp.of(node.args[0])
    re = pp.op("mul", a, -1.0) if node.target is aten.neg.default else a
    return pp.join(re, pp.op("mul", b, -1.0))


@handles(aten.angle.default, complex_values=True)
def _angle(lw: Lowering, node: Node) -> int:
    """The phase ``atan2(imaginary, real)``, a real tensor of the complex value's shape."""
    pp = _Parts(lw, node)
    re, im = pp.of(node.args[0])
    y = pp.e("atan2", [pp.tensor(im), pp.tensor(re)])
    return lw.emit("reshape", [y], {"shape": lw.out()[1]})


@handles(aten.abs.default, complex_values=True)
def _abs(lw: Lowering, node: Node) -> int:
    """``sqrt(a² + b²)`` (a real result)."""
    pp = _Parts(lw, node)
    a, b = pp.of(node.args[0])
    y = pp.e("sqrt", [pp.op("add", pp.op("mul", a, a), pp.op("mul", b, b))])
    return lw.emit("reshape", [y], {"shape": lw.out()[1]})


@handles(aten._to_copy.default, complex_values=True)
def _to_copy(lw: Lowering, node: Node) -> int:
    """dtype conversions into, between and out of complex (out keeps the real part, as torch)."""
    dt, out = lw.out()
    if is_complex(node) and is_complex(node.args[0]):
        return lw.tensor(node.args[0], dt)
    pp = _Parts(lw, node)
    a, b = pp.of(node.args[0])
    if is_complex(node):
        return pp.join(a, b)
    if lw.g.values[a].dtype != dt:
        a = pp.e("cast", [a], lw.shape_of(a), {"dtype": dt}, dtype=dt)
    return lw.emit("reshape", [a], {"shape": out})
