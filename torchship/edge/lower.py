"""Lower a decomposed ``torch.export`` graph (ATen ops) to the edge core op set.

Each supported ATen op has one handler here that emits core instructions into a ``Graph``;
anything else fails with the op, the model's source line and what to do.

Example:
    >>> # used by torchship.edge.export.export(); see there
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
import sympy
import torch
from torch.export.graph_signature import InputKind
from torch.utils._sympy.functions import CeilToInt, FloorDiv, FloorToInt, ToFloat, TruncToInt
from torch.utils._sympy.functions import Max as TorchMax
from torch.utils._sympy.functions import Min as TorchMin

from torchship.edge.graph import Graph

aten = torch.ops.aten
INT64_MAX = 2**63 - 1


class ExportError(Exception):
    """A model that cannot be lowered to the core op set (message says where and what to do)."""


def source_of(node: torch.fx.Node) -> tuple[str, str]:
    """(``file:line``, code line) of the model code that produced ``node``, best effort.

    Example:
        >>> # ("model.py:42", "return self.fc(x).cumsum(0)")
    """
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in [^\n]*\n\s*([^\n]*)', trace)
    if not frames:
        return "", ""
    for f, line, code in reversed(frames):  # innermost frame of the user's code
        if "/torch/" not in f and "torchship/edge/" not in f and not f.startswith("<eval_with_key"):
            return f"{f}:{line}", code.strip()
    f, line, code = frames[-1]
    return f"{f}:{line}", code.strip()


#: 2-byte float types: stored (weights, inputs, outputs) as themselves, computed in F32 with
#: each op's result rounded back to them (torch's CPU semantics: float math, one rounding per op)
HALF_TYPES = {torch.float16: "F16", torch.bfloat16: "BF16"}


#: ops whose result is some of their inputs' values (moved, selected, negated): on float16 /
#: bfloat16 inputs the result is exact in that dtype, and needs no rounding
EXACT_OPS = {
    aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.permute.default, aten.transpose.int,
    aten.t.default, aten.expand.default, aten.slice.Tensor, aten.select.int, aten.cat.default, aten.squeeze.dim,
    aten.squeeze.dims, aten.squeeze.default, aten.unsqueeze.default, aten.clone.default, aten.alias.default,
    aten.index.Tensor, aten.index_select.default, aten.gather.default, aten.flip.default, aten.relu.default,
    aten.neg.default, aten.abs.default, aten.amax.default, aten.amin.default, aten.max.dim, aten.min.dim,
    aten.where.self, aten.maximum.default, aten.minimum.default, aten.split_with_sizes.default,
    aten.split.Tensor, aten.unbind.int, aten.max_pool2d_with_indices.default, aten.embedding.default,
    aten.constant_pad_nd.default, aten.detach.default,
}


def torch_dtype(dt: torch.dtype) -> str:
    """Program dtype a torch dtype is computed in (float16 and bfloat16: F32, see
    ``storage_dtype``).

    Example:
        >>> torch_dtype(torch.float32), torch_dtype(torch.bfloat16)
        ('F32', 'F32')
    """
    table = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
    if dt in HALF_TYPES:
        return "F32"
    if dt not in table:
        raise ExportError(f"dtype {dt} is not supported by torchship.edge (supported: {sorted(table.values()) + sorted(HALF_TYPES.values())}); convert the model/input to float32")
    return table[dt]


def storage_dtype(dt: torch.dtype) -> str:
    """Program dtype a torch dtype is stored in (``F16``, ``BF16`` for the 2-byte floats).

    Example:
        >>> storage_dtype(torch.bfloat16), storage_dtype(torch.int64)
        ('BF16', 'I64')
    """
    return HALF_TYPES.get(dt) or torch_dtype(dt)


def is_complex(node: Any) -> bool:
    """Whether an fx node's (single) result is a complex tensor.

    Example:
        >>> # is_complex(view_as_complex_node) -> True
    """
    v = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return isinstance(v, torch.Tensor) and v.dtype.is_complex


def rank(node: torch.fx.Node) -> int:
    """Rank of an fx node's tensor as torch sees it (a complex value's pair axis not counted).

    Example:
        >>> # rank(x_node) -> 3
    """
    return len(node.meta["val"].shape)


def out_dtype(lw: Any, node: torch.fx.Node) -> str:
    """Program dtype of ``node``'s (single) result; the handler signature ``(lw, node)``.

    Example:
        >>> # out_dtype(lw, node) -> 'F32'
    """
    return torch_dtype(node.meta["val"].dtype)


def sym_to_dim(expr: Any) -> Any:
    """Convert a sympy size expression from torch.export to a program dimension.

    Example:
        >>> s = sympy.Symbol("s0", positive=True, integer=True)
        >>> sym_to_dim(2 * s + 1)
        ['+', 1, ['*', 2, 's0']]
    """
    if isinstance(expr, torch.SymInt):
        expr = expr.node.expr
    if isinstance(expr, int):
        return expr
    expr = sympy.sympify(expr)
    if expr.is_Integer:
        return int(expr)
    if expr.is_Symbol:
        return str(expr)
    if isinstance(expr, sympy.Add):
        return ["+", *(sym_to_dim(a) for a in expr.args)]
    if isinstance(expr, sympy.Mul):
        args = [sym_to_dim(a) for a in expr.args]
        if any(isinstance(a, int) and a < 0 for a in args):
            raise ExportError(f"size expression {expr} multiplies by a negative number")
        return ["*", *args]
    if isinstance(expr, sympy.Pow) and expr.exp.is_Integer and int(expr.exp) >= 1:  # h*w with h = w
        return ["*", *[sym_to_dim(expr.base)] * int(expr.exp)]
    if isinstance(expr, FloorDiv):
        num, den = expr.args
        if not den.is_Integer:  # 2*s**2 // s: exact polynomial division is s * 2
            q, r = sympy.div(num, den)
            if r == 0 and q.is_polynomial():
                return sym_to_dim(sympy.expand(q))
        return ["//", sym_to_dim(expr.args[0]), sym_to_dim(expr.args[1])]
    if isinstance(expr, (TruncToInt, FloorToInt, CeilToInt)):
        return _scaled_size(expr)
    if isinstance(expr, (sympy.Max, TorchMax)):
        return ["max", *(sym_to_dim(a) for a in expr.args)]
    if isinstance(expr, (sympy.Min, TorchMin)):  # torch's own Min: diagonal(offset) of a dynamic size
        return ["min", *(sym_to_dim(a) for a in expr.args)]
    raise ExportError(f"size expression {expr} ({type(expr).__name__}) is not supported in dynamic shapes")


def _scaled_size(expr: Any) -> Any:
    """``trunc``/``floor``/``ceil`` of ``c · size`` (``F.interpolate(scale_factor=1.5)`` on a
    dynamic size) as integer arithmetic with ``c``'s exact binary ratio ``p / q``:
    ``(p·size) // q``, or ``(p·size + q − 1) // q`` for ``ceil`` (sizes are non-negative)."""
    arg, coeff = expr.args[0], 1.0
    if isinstance(arg, sympy.Mul) and len(arg.args) == 2 and arg.args[0].is_Number:
        coeff, arg = float(arg.args[0]), arg.args[1]
    if not isinstance(arg, ToFloat) or coeff < 0:
        raise ExportError(f"size expression {expr} is not supported in dynamic shapes")
    num, den = coeff.as_integer_ratio()
    inner = sym_to_dim(arg.args[0])
    scaled = inner if num == 1 else ["*", num, inner]
    if den == 1:
        return scaled
    return ["//", ["+", scaled, den - 1] if isinstance(expr, CeilToInt) else scaled, den]


def dim_prod(dims: list[Any]) -> Any:
    """The product of program dimensions (an int when all are static, else a ``*`` expression).

    Example:
        >>> dim_prod([2, "s", 3])
        ['*', 6, 's']
    """
    static = math.prod(d for d in dims if isinstance(d, int))
    dynamic = [d for d in dims if not isinstance(d, int)]
    if not dynamic:
        return static
    args = ([static] if static != 1 else []) + dynamic
    return args[0] if len(args) == 1 else ["*", *args]


def flat_arg_extreme(lw: Lowering, node: torch.fx.Node, x: int, negate: bool) -> int:
    """``argmax``/``argmin`` without a dim (of the flattened tensor): ``argmax`` of ``x`` (or of
    ``-x``) reshaped to one axis, viewed as the node's shape (``[]``, or all ones with keepdim).

    Example:
        >>> # flat_arg_extreme(lw, node, x, negate=False)  -> the flat index of the first maximum
    """
    dt = lw.g.values[x].dtype
    n = dim_prod(lw.shape_of(x))
    flat = lw.g.emit("reshape", [x], dt, [n], {"shape": [n]}, lw.source)
    if negate:
        flat = lw.g.emit("neg", [flat], dt, [n], {}, lw.source)
    idx = lw.g.emit("argmax", [flat], "I64", [1], {"axis": 0, "keepdim": True}, lw.source)
    return lw.emit("reshape", [idx], {"shape": lw.out()[1]})


def meta_shape(node: Any) -> list[Any]:
    """Program shape of an fx node's fake tensor.

    Example:
        >>> # [1, 's0', 384]
    """
    return [sym_to_dim(d) for d in node.meta["val"].shape]


Handler = Callable[["Lowering", torch.fx.Node], Any]
HANDLERS: dict[Any, Handler] = {}
#: handlers for nodes that read or produce a complex tensor (``lower_complex``): a complex value
#: is lowered as a real one with a trailing axis of 2 (real, imaginary)
COMPLEX_HANDLERS: dict[Any, Handler] = {}


def handles(*targets: Any, complex_values: bool = False) -> Callable[[Handler], Handler]:
    """Register a lowering handler for ATen overloads (``complex_values``: for nodes that read
    or produce complex tensors).

    Example:
        >>> # @handles(aten.relu.default) def _relu(lw, node): ...
    """
    table = COMPLEX_HANDLERS if complex_values else HANDLERS

    def wrap(fn: Handler) -> Handler:
        for t in targets:
            table[t] = fn
        return fn

    return wrap


class Lowering:
    """State while lowering one method: fx node -> value id (or list / dim / scalar).

    Example:
        >>> # Lowering(graph, ep, weight_names).run()
    """

    def __init__(self, graph: Graph, ep: torch.export.ExportedProgram, names: dict[str, str]) -> None:
        self.g = graph
        self.ep = ep
        self.names = names
        self.env: dict[torch.fx.Node, Any] = {}
        self.node: torch.fx.Node | None = None
        self.source = ""
        #: F32 value id -> (dtype, id) of the same values in a 2-byte storage dtype (F16/BF16
        #: results; id None when no cast down was needed: exact ops on such values)
        self.stored: dict[int, tuple[str, int | None]] = {}

    # ------------------------------------------------------------------ helpers
    def fail(self, msg: str) -> ExportError:
        node = self.node
        where, code = source_of(node) if node is not None else ("", "")
        loc = f"\n  at {where}\n    {code}" if where else "\n  (no source location recorded)"
        return ExportError(f"torchship.edge.export: {msg}{loc}")

    def val(self, arg: Any) -> Any:
        if isinstance(arg, torch.fx.Node):
            return self.env[arg]
        if isinstance(arg, (list, tuple)):
            return [self.val(a) for a in arg]
        return arg

    def dim(self, arg: Any) -> Any:
        """An int argument that may be symbolic."""
        if isinstance(arg, torch.fx.Node):
            v = arg.meta.get("val")
            if isinstance(v, (torch.SymInt, int)):
                return sym_to_dim(v)
            raise self.fail(f"expected an integer argument, got {arg}")
        if isinstance(arg, torch.SymInt):
            return sym_to_dim(arg)
        return int(arg)

    def out(self) -> tuple[str, list[Any]]:
        """(dtype, shape) of the node's result; a complex result is its real pairs."""
        v = self.node.meta["val"]
        if v.dtype.is_complex:
            return torch_dtype(v.real.dtype), meta_shape(self.node) + [2]
        return torch_dtype(v.dtype), meta_shape(self.node)

    def emit(self, op: str, inputs: list[int], attrs: dict[str, Any] | None = None, dtype: str | None = None, shape: list[Any] | None = None) -> int:
        if dtype is None or shape is None:
            d, s = self.out()
            dtype, shape = dtype or d, shape if shape is not None else s
        return self.g.emit(op, inputs, dtype, shape, attrs, self.source, name=self.node.name if self.node is not None else "")

    def const(self, value: Any, dtype: str) -> int:
        arr = np.asarray(value, dtype={"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}[dtype])
        return self.g.add_const(f"{self.g.name}.scalar", arr)

    def tensor(self, arg: Any, dtype: str) -> int:
        """Value id for a tensor argument or a Python scalar, cast to ``dtype``."""
        if isinstance(arg, torch.fx.Node):
            if isinstance(arg.meta.get("val"), torch.SymInt):
                return self.sym_tensor(arg.meta["val"], dtype)
            vid = self.env[arg]
            if not isinstance(vid, int):
                raise self.fail(f"expected a tensor argument, got {arg}")
            if self.g.values[vid].dtype != dtype:
                vid = self.g.emit("cast", [vid], dtype, self.g.values[vid].shape, {"dtype": dtype}, self.source)
            return vid
        if isinstance(arg, (bool, int, float)):
            return self.const(arg, dtype)
        raise self.fail(f"unsupported argument {arg!r}")

    def sym_tensor(self, value: Any, dtype: str) -> int:
        """A 0-d tensor holding a (possibly symbolic) size, e.g. ``triu(ones(n, t), t - n + 1)``'s
        diagonal: ``arange(d, d + 1)`` reshaped to ``[]``, cast to ``dtype``.

        Example:
            >>> # lw.sym_tensor(node.meta["val"], "F32")  -> value id of a 0-d F32 tensor
        """
        return self.dim_tensor(sym_to_dim(value), dtype)

    def dim_tensor(self, d: Any, dtype: str) -> int:
        """A 0-d tensor holding the program dimension ``d`` (an int or an expression).

        Example:
            >>> # lw.dim_tensor(["+", "seq", 1], "I64")  -> value id of a 0-d I64 tensor
        """
        if isinstance(d, int):
            return self.const(d, dtype)
        one = self.g.emit("arange", [], "I64", [1], {"start": d, "end": ["+", d, 1], "step": 1, "dtype": "I64"}, self.source)
        vid = self.g.emit("reshape", [one], "I64", [], {"shape": []}, self.source)
        return vid if dtype == "I64" else self.g.emit("cast", [vid], dtype, [], {"dtype": dtype}, self.source)

    def shape_of(self, vid: int) -> list[Any]:
        return self.g.values[vid].shape

    def widened(self, vid: int) -> int:
        """A F16/BF16 input or weight as the F32 value ops compute on (itself otherwise).

        Example:
            >>> # lw.widened(lw.g.add_input("x", "BF16", [2, 3]))  -> an F32 cast of x
        """
        v = self.g.values[vid]
        if v.dtype not in ("F16", "BF16"):
            return vid
        wide = self.g.emit("cast", [vid], "F32", v.shape, {"dtype": "F32"}, self.source)
        self.stored[wide] = (v.dtype, vid)
        return wide

    def const_value(self, vid: int) -> np.ndarray | None:
        """The array value ``vid`` holds when it is computed from constants alone (a weight; an
        F16/BF16 weight read through its cast, as float32; a ``weight_norm`` weight), else None.

        Example:
            >>> # lw.const_value(lw.val(node.args[1]))  -> the weight array
        """
        from torchship.edge.passes.fold import evaluate

        return evaluate(self.g, vid)

    def rounded(self, node: torch.fx.Node, result: Any) -> Any:
        """``result`` with each F16/BF16 tensor of the node (computed in F32) rounded to its
        storage dtype and back (``cast`` there and back), as torch rounds each op's result.

        Example:
            >>> # lw.rounded(node, vid)  -> cast(cast(vid, "BF16"), "F32") for a bfloat16 node
        """
        meta = node.meta.get("val")
        metas = meta if isinstance(meta, (list, tuple)) else [meta]
        results = result if isinstance(result, list) else [result]
        if not any(isinstance(m, torch.Tensor) and m.dtype in HALF_TYPES for m in metas) or len(metas) != len(results):
            return result
        out = []
        for m, vid in zip(metas, results):
            half_dt = HALF_TYPES.get(m.dtype) if isinstance(m, torch.Tensor) else None
            if half_dt and isinstance(vid, int) and self.stored.get(vid, ("",))[0] != half_dt:
                if self._exact(node, half_dt):  # the values are already representable
                    self.stored[vid] = (half_dt, None)
                else:
                    shape = self.g.values[vid].shape
                    half = self.g.emit("cast", [vid], half_dt, shape, {"dtype": half_dt}, self.source)
                    vid = self.g.emit("cast", [half], "F32", shape, {"dtype": "F32"}, self.source)
                    self.stored[vid] = (half_dt, half)
            out.append(vid)
        return out if isinstance(result, list) else out[0]

    def _exact(self, node: torch.fx.Node, half_dt: str) -> bool:
        """Whether ``node`` only moves or selects values (a view, ``cat``, ``max``, ``relu``, …)
        whose float inputs all hold ``half_dt`` values already: its result needs no rounding."""
        if node.target not in EXACT_OPS:
            return False
        args = [a for arg in (*node.args, *node.kwargs.values()) for a in (arg if isinstance(arg, (list, tuple)) else [arg])]
        if any(isinstance(a, float) for a in args):  # a Python float may not be representable
            return False
        floats = [a for a in args if isinstance(a, torch.fx.Node) and isinstance(a.meta.get("val"), torch.Tensor)
                  and a.meta["val"].dtype.is_floating_point]
        return all(isinstance(self.env.get(a), int) and self.stored.get(self.env[a], ("",))[0] == half_dt for a in floats)

    # ------------------------------------------------------------------ driver
    def run(self) -> None:
        sig = self.ep.graph_signature
        consts = {**self.ep.state_dict, **self.ep.constants}
        param_names = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
        tokens = {spec.arg.name for spec in sig.input_specs if spec.kind is InputKind.TOKEN}
        for node in self.ep.graph.nodes:
            self.node = node
            self.source = source_of(node)[0]
            if node.op == "placeholder":
                if node.name in tokens:  # the effect token threading torch's run-time checks
                    self.env[node] = None
                elif node.name in param_names:
                    fqn = param_names[node.name]
                    t = consts[fqn].detach()
                    t = torch.view_as_real(t.resolve_conj()) if t.is_complex() else t
                    torch_dtype(t.dtype)
                    arr = t.contiguous().float().numpy().astype(ml_dtypes.bfloat16) if t.dtype is torch.bfloat16 \
                        else t.contiguous().numpy().copy()
                    self.env[node] = self.widened(self.g.add_const(self.names.get(fqn, fqn), arr))
                else:
                    v = node.meta["val"]
                    if is_complex(node):
                        raise self.fail(f"input {node.name} is a complex tensor; pass torch.view_as_real(z) and "
                                        "call torch.view_as_complex on it inside the model")
                    if isinstance(v, torch.Tensor):
                        self.env[node] = self.widened(self.g.add_input(node.name, storage_dtype(v.dtype), meta_shape(node)))
                    else:
                        raise self.fail(f"input {node.name} is not a tensor ({type(v).__name__}); pass tensors only")
            elif node.op == "call_function":
                handler = HANDLERS.get(node.target) or HANDLERS.get(str(node.target))  # custom ops by name
                if any(is_complex(a) for a in (node, *node.all_input_nodes)):
                    handler = COMPLEX_HANDLERS.get(node.target)
                    if handler is None:
                        raise self.fail(
                            f"op {node.target} on complex tensors is not supported; complex values are lowered "
                            "as (real, imaginary) pairs for the ops listed under 'Complex tensors' in "
                            "docs/edge-ops.md"
                        )
                if handler is None:
                    from torchship.edge.lower_weights import eval_weights_only

                    folded = eval_weights_only(self, node)  # computed from weights only: by torch, now
                    if folded is None:
                        raise self.fail(
                            f"op {node.target} is not supported by the edge core op set. Supported ops are listed in "
                            "docs/edge-ops.md; rewrite this part of the model with supported operations"
                        )
                    self.env[node] = folded
                else:
                    self.env[node] = self.rounded(node, handler(self, node))
            elif node.op == "output":
                outs = node.args[0]
                flat = list(outs) if isinstance(outs, (list, tuple)) else [outs]
                flat = self._user_outputs(flat)
                ids = []
                for o in flat:
                    if is_complex(o):
                        raise self.fail(f"output {o} is a complex tensor; return torch.view_as_real(...) of it")
                    v = self.env.get(o) if isinstance(o, torch.fx.Node) else None
                    if not isinstance(v, int):
                        raise self.fail(f"output {o} is not a tensor")
                    half_dt = HALF_TYPES.get(o.meta["val"].dtype)
                    if half_dt and self.stored.get(v, ("",))[0] != half_dt:
                        v = self.rounded(o, v)
                    if half_dt and self.stored[v][1] is None:  # exact values never cast down: cast now
                        shape = self.g.values[v].shape
                        self.stored[v] = (half_dt, self.g.emit("cast", [v], half_dt, shape, {"dtype": half_dt}, self.source))
                    ids.append(self.stored[v][1] if half_dt else v)
                self.g.outputs = ids
            elif node.op == "get_attr" and isinstance(getattr(self.ep.graph_module, str(node.target), None), torch.fx.GraphModule):
                self.node = next(iter(node.users), node)  # the torch.cond call: the user's line
                raise self.fail("data-dependent control flow (torch.cond / while_loop / map) is not supported; "
                                "compute both branches and pick with torch.where, or unroll the loop in Python")
            else:
                raise self.fail(f"fx node kind {node.op!r} is not supported")

    def _user_outputs(self, flat: list[Any]) -> list[Any]:
        """The method's own outputs. Writes into a buffer (a KV cache or counter kept in the
        module) are refused: a program has no state between calls. Writes into an input are
        dropped (the caller's arrays are not changed; the returned values are right)."""
        from torch.export.graph_signature import OutputKind

        specs = self.ep.graph_signature.output_specs
        if len(specs) != len(flat):
            return flat
        for spec in specs:
            if spec.kind in (OutputKind.BUFFER_MUTATION, OutputKind.PARAMETER_MUTATION):
                raise ExportError(
                    f"torchship.edge.export: the model writes into its buffer {spec.target!r} (a cache or counter "
                    "kept in the module); a program keeps no state between calls. Pass that tensor as an input "
                    "and return its new value (e.g. a step(ids, past_k, past_v) method returning the grown "
                    "caches), or build it with torch.cat / torch.where instead of an in-place write")
        return [o for o, spec in zip(flat, specs) if spec.kind not in (OutputKind.USER_INPUT_MUTATION, OutputKind.TOKEN)]


def _identity(lw: Lowering, node: torch.fx.Node) -> Any:
    return lw.val(node.args[0])


def _skip(lw: Lowering, node: torch.fx.Node) -> Any:
    return None


for _t in (aten.clone.default, aten.alias.default, aten.detach.default, aten.lift_fresh_copy.default, aten.contiguous.default):
    HANDLERS[_t] = COMPLEX_HANDLERS[_t] = _identity
for _t in (aten._assert_tensor_metadata.default, aten._assert_scalar.default, aten._assert_async.msg, aten._assert_async.default, aten.sym_constrain_range_for_size.default, aten.sym_constrain_range.default):
    HANDLERS[_t] = COMPLEX_HANDLERS[_t] = _skip
HANDLERS[operator.getitem] = lambda lw, node: lw.val(node.args[0])[node.args[1]]


def _with_effects(lw: Lowering, node: torch.fx.Node) -> Any:
    """torch's run-time error checks threaded through an effect token (``torch.linalg``'s
    ``_linalg_check_errors``) are dropped, as every run-time assertion is; other effectful
    ops are refused."""
    if node.args[1] is not aten._linalg_check_errors.default:
        raise lw.fail(f"the side-effecting op {node.args[1]} is not supported")
    return [None]


HANDLERS[torch.ops.higher_order.with_effects] = _with_effects


_FLOAT_OPS = {operator.add: "add", operator.sub: "sub", operator.mul: "mul", operator.truediv: "div"}


def _sym(lw: Lowering, node: torch.fx.Node) -> Any:
    if isinstance(node.meta["val"], torch.SymFloat):
        return _sym_float(lw, node)
    return sym_to_dim(node.meta["val"])


def _sym_float(lw: Lowering, node: torch.fx.Node) -> int:
    """Float arithmetic on sizes (``F.interpolate``'s ``(h - 1) / (2h - 1)`` on a dynamic h) as
    0-d ``F64`` tensors computed at run time; tensor ops read them like Python numbers."""
    if node.target is torch.sym_float:
        return lw.tensor(node.args[0], "F64")
    op = _FLOAT_OPS.get(node.target)
    if op is None or len(node.args) != 2:
        raise lw.fail(f"float size arithmetic {node.target} is not supported")
    a, b = lw.tensor(node.args[0], "F64"), lw.tensor(node.args[1], "F64")
    return lw.g.emit(op, [a, b], "F64", [], {}, lw.source)


for _t in (aten.sym_size.int, operator.mul, operator.add, operator.floordiv, operator.sub, torch.sym_max, torch.sym_min,
           torch.sym_float, operator.truediv, math.trunc, math.floor, math.ceil, torch.sym_int):
    HANDLERS[_t] = COMPLEX_HANDLERS[_t] = _sym


def _size_check(lw: Lowering, node: torch.fx.Node) -> None:
    """A comparison of sizes feeding only torch's run-time assertions (``u0 >= 0`` for the
    length of a ``y[mask]`` read back through its mask) is dropped with them."""
    if any(u.target is not aten._assert_scalar.default for u in node.users):
        raise lw.fail(f"a comparison of sizes ({node.target.__name__}) used as a value is not supported")


#: comparisons of sizes in an exported graph (they only feed run-time assertions)
SIZE_COMPARISONS = (operator.ge, operator.gt, operator.le, operator.lt, operator.eq, operator.ne)
for _t in SIZE_COMPARISONS:
    HANDLERS[_t] = _size_check
