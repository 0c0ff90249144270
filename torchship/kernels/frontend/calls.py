"""Expressions of device code: operators, indexing, attributes, and calls mapped to ops.

Functions are recognised by identity (``torch.exp``, ``F.gelu``, ``ts.zeros``...) through
:data:`FUNCTIONS`; tensor methods by name through :data:`METHODS`. Python numbers fold at
compile time. Anything else raises a :class:`~torchship.kernels.errors.KernelError` that
names the construct and says what to write instead.

Example:
    >>> import torch
    >>> FUNCTIONS[torch.exp], METHODS["amax"]
    ('exp', 'amax')
"""

from __future__ import annotations

import ast
import builtins
import collections
import math
import operator
from typing import Any

import torch
import torch.nn.functional as F

from torchship.kernels import language
from torchship.kernels.errors import KernelSyntaxError, KernelTypeError
from torchship.kernels.frontend import (
    einsum,
    elementwise,
    factories,
    gathers,
    inline,
    masked,
    pieces,
    slices,
    takealong,
)
from torchship.kernels.frontend.captures import TensorRef
from torchship.kernels.frontend.conditions import host_truth
from torchship.kernels.frontend.host import is_missing
from torchship.kernels.ir import ConstDim, FullDim, TileDim, TileInfo, Value
from torchship.kernels.ops.memory import Index
from torchship.kernels.ops.pointwise import TORCH_UNARY

_ARC = ("atan", "asin", "acos", "asinh", "acosh", "atanh")  # also torch.arctan, ...
FUNCTIONS: dict[Any, str] = {getattr(torch, n): n for n in TORCH_UNARY if hasattr(torch, n)}
FUNCTIONS.update({
    torch.special.erf: "erf", torch.special.erfc: "erfc", torch.special.erfinv: "erfinv",
    torch.special.gammaln: "lgamma", torch.special.digamma: "digamma",
    torch.special.psi: "digamma", math.erfc: "erfc", math.lgamma: "lgamma",
    torch.special.expit: "sigmoid", F.relu: "relu", F.silu: "silu",
    F.gelu: "gelu", F.sigmoid: "sigmoid", F.tanh: "tanh", torch.maximum: "maximum",
    torch.minimum: "minimum", torch.where: "where", torch.pow: "pow", torch.clamp: "clamp",
    torch.clip: "clamp", torch.sum: "sum", torch.prod: "prod", torch.mean: "mean", torch.amax: "amax",
    torch.amin: "amin", torch.max: "max", torch.min: "min", torch.argmax: "argmax",
    torch.argmin: "argmin", torch.matmul: "matmul", torch.mm: "matmul", torch.bmm: "matmul",
    torch.addmm: "addmm", torch.baddbmm: "addmm", language.zeros: "zeros",
    language.full: "full", language.rand: "rand", language.randn: "randn", language.dot: "dot",
    language.reduce: "ts_reduce", language.associative_scan: "ts_scan", language.atomic_add: "atomic_add",
    builtins.abs: "abs", builtins.min: "pymin", builtins.max: "pymax", builtins.float: "pyfloat",
    builtins.int: "pyint", math.sqrt: "sqrt", math.exp: "exp", math.log: "log",
    math.log1p: "log1p", math.expm1: "expm1", math.log10: "log10", math.log2: "log2",
    math.sin: "sin", math.cos: "cos", math.tan: "tan", math.tanh: "tanh", math.erf: "erf",
    math.floor: "floor", math.ceil: "ceil", math.trunc: "trunc",
    torch.square: "square", torch.add: "add", torch.mul: "mul", torch.sub: "sub",
    torch.div: "truediv", torch.cumsum: "cumsum", torch.cumprod: "cumprod",
    torch.logcumsumexp: "logcumsumexp", torch.cummax: "cummax", torch.cummin: "cummin",
    torch.squeeze: "squeeze", torch.unsqueeze: "unsqueeze", torch.transpose: "transpose",
    torch.t: "t", torch.var: "var", torch.std: "std", torch.var_mean: "var_mean",
    torch.std_mean: "std_mean", torch.softmax: "softmax", F.softmax: "softmax",
    torch.log_softmax: "log_softmax", F.log_softmax: "log_softmax",
    torch.zeros_like: "zeros_like", torch.ones_like: "ones_like", torch.full_like: "full_like",
    torch.masked_fill: "masked_fill", torch.logsumexp: "logsumexp",
    torch.linalg.vector_norm: "vector_norm", torch.norm: "norm", torch.any: "any",
    F.normalize: "normalize", F.cosine_similarity: "cosine_similarity",
    torch.cosine_similarity: "cosine_similarity",
    torch.all: "all", torch.clamp_min: "clamp_min", torch.clamp_max: "clamp_max",
    F.leaky_relu: "leaky_relu", F.softplus: "softplus", F.mish: "mish",
    F.logsigmoid: "logsigmoid", F.elu: "elu", F.celu: "celu", F.selu: "selu", torch.selu: "selu",
    F.hardtanh: "hardtanh", F.relu6: "relu6", F.hardsigmoid: "hardsigmoid",
    F.hardswish: "hardswish", F.softsign: "softsign", torch.bitwise_and: "and_", torch.bitwise_or: "or_",
    torch.bitwise_xor: "xor", torch.bitwise_left_shift: "lshift",
    torch.bitwise_right_shift: "rshift", torch.atan2: "atan2", torch.arctan2: "atan2",
    torch.sort: "sort", torch.argsort: "argsort", torch.topk: "topk",
    math.atan2: "atan2", **{getattr(torch, "arc" + n[1:]): n for n in _ARC},
    **{getattr(math, n): n for n in ("atan", "asin", "acos", "sinh", "cosh", *_ARC[3:])},
})
METHODS = {n: n for n in [*TORCH_UNARY, "cumsum", "cumprod", "logcumsumexp", "cummax", "cummin", "sum", "prod", "mean", "amax", "amin",
                          "max", "min", "argmax", "argmin", "to", "float", "half", "bfloat16",
                          "double", "t", "transpose", "unsqueeze", "squeeze", "clamp", "clip",
                          "pow", "var", "std", "var_mean", "std_mean", "softmax",
                          "log_softmax", "masked_fill", "logsumexp", "norm", "any", "all",
                          "clamp_min", "clamp_max",
                          "matmul", "square", "type_as", "int", "long", "bool", "atan2", "sort", "argsort", "topk"]}
METHODS.update({"arc" + n[1:]: n for n in [*_ARC, "atan2"]})
FUNCTIONS.update({**elementwise.FUNCTIONS, **pieces.FUNCTIONS, **factories.FUNCTIONS,
                  **einsum.FUNCTIONS, **masked.FUNCTIONS, **takealong.FUNCTIONS})
METHODS.update({**elementwise.METHODS, **pieces.METHODS, **takealong.METHODS})
_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "truediv",
           ast.Pow: "pow", ast.BitAnd: "and_", ast.BitOr: "or_", ast.BitXor: "xor",
           ast.MatMult: "matmul", ast.FloorDiv: "floordiv", ast.Mod: "mod",
           ast.LShift: "lshift", ast.RShift: "rshift"}
_PYOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
          ast.Div: operator.truediv, ast.Pow: operator.pow, ast.FloorDiv: operator.floordiv,
          ast.Mod: operator.mod, ast.BitAnd: operator.and_, ast.BitOr: operator.or_,
          ast.BitXor: operator.xor, ast.LShift: operator.lshift, ast.RShift: operator.rshift}
_CMPS = {ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge", ast.Eq: "eq", ast.NotEq: "ne"}
_PYCMPS = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
           ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Is: operator.is_,
           ast.IsNot: operator.is_not}
_EXPR_FORBIDDEN = {
    ast.ListComp: "list comprehensions", ast.SetComp: "set comprehensions",
    ast.DictComp: "dict comprehensions", ast.GeneratorExp: "generator expressions",
    ast.Lambda: "lambda", ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
    ast.NamedExpr: "`:=`", ast.JoinedStr: "f-strings", ast.Dict: "dicts", ast.Set: "sets",
    ast.Starred: "`*` unpacking",
}
_DTYPE_METHODS = {"float": torch.float32, "half": torch.float16, "bfloat16": torch.bfloat16,
                  "double": torch.float64, "int": torch.int32, "long": torch.int64,
                  "bool": torch.bool}
MaxResult = collections.namedtuple("MaxResult", ["values", "indices"])


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) or isinstance(x, bool)


class CallHandler:
    """Expression evaluation for :class:`~torchship.kernels.frontend.device.DeviceBuilder`."""

    def __init__(self, b: Any) -> None:
        self.b = b

    def err(self, cls: type, msg: str, hint: str | None = None, node: ast.AST | None = None) \
            -> Exception:
        return self.b.error(cls, msg, hint, node)

    # ------------------------------------------------------------------ expressions
    def expr(self, node: ast.AST) -> Any:
        for cls, what in _EXPR_FORBIDDEN.items():
            if isinstance(node, cls):
                raise self.err(KernelSyntaxError, f"{what} are not supported in device code"
                               if what.endswith("s") else f"{what} is not supported in device "
                               "code", hint="write the block computation with tile ops "
                               "(e.g. ts.zeros, torch.where) instead", node=node)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self.b.lookup(node.id, node)
        if isinstance(node, (ast.Tuple, ast.List)):
            return tuple(self.expr(e) for e in node.elts)
        if isinstance(node, ast.Attribute):
            return self.attribute(self.expr(node.value), node.attr, node)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node.op, self.expr(node.left), self.expr(node.right), node)
        if isinstance(node, ast.UnaryOp):
            v = self.expr(node.operand)
            if isinstance(node.op, ast.UAdd):
                return v
            if not isinstance(v, Value):
                if isinstance(node.op, ast.USub):
                    return -v
                if isinstance(node.op, ast.Not):
                    return not v
                return ~v
            if isinstance(node.op, ast.USub):
                return self.b.emit("neg", [v])
            if isinstance(node.op, (ast.Invert, ast.Not)):
                if isinstance(node.op, ast.Not):
                    raise self.err(KernelSyntaxError, "`not` on a block is not supported",
                                   hint="use ~mask", node=node)
                if v.dtype != torch.bool:
                    raise self.err(KernelTypeError, "`~` is only supported on bool blocks",
                                   node=node)
                return self.b.emit("not_", [v])
        if isinstance(node, ast.Compare):
            if len(node.ops) != 1:
                raise self.err(KernelSyntaxError, "chained comparisons are not supported in "
                               "device code", hint="write (a < b) & (b < c)", node=node)
            left, right = self.expr(node.left), self.expr(node.comparators[0])
            op = type(node.ops[0])
            if not isinstance(left, Value) and not isinstance(right, Value) and op in _PYCMPS:
                return _PYCMPS[op](left, right)
            if op not in _CMPS:
                raise self.err(KernelSyntaxError, f"`{ast.unparse(node)}` is not supported on "
                               "blocks", hint="use ==, !=, <, <=, >, >=", node=node)
            return self.b.emit(_CMPS[op], [self.operand(left), self.operand(right)])
        if isinstance(node, ast.BoolOp):
            vals = [self.expr(v) for v in node.values]
            vals = [v if not isinstance(v, Value) or (t := host_truth(self.b, v)) is None else t
                    for v in vals]
            if any(isinstance(v, Value) for v in vals):
                raise self.err(KernelSyntaxError, "`and`/`or` on blocks are not supported",
                               hint="use & and | on bool blocks", node=node)
            res = vals[0]
            for v in vals[1:]:
                res = (res and v) if isinstance(node.op, ast.And) else (res or v)
            return res
        if isinstance(node, ast.IfExp):
            cond = self.expr(node.test)
            if isinstance(cond, Value) and (known := host_truth(self.b, cond)) is not None:
                cond = known
            if isinstance(cond, Value):
                raise self.err(KernelSyntaxError, "`a if cond else b` on a device value is not "
                               "supported", hint="use torch.where(cond, a, b)", node=node)
            return self.expr(node.body if cond else node.orelse)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.err(KernelSyntaxError, f"`{type(node).__name__}` expressions are not "
                       "supported in device code", node=node)

    def operand(self, v: Any) -> Any:
        if isinstance(v, Value) or _is_num(v):
            return v
        if isinstance(v, TileInfo):
            raise self.err(KernelTypeError, f"tile {v.name!r} used as a number",
                           hint=f"use {v.name}.index (positions), {v.name}.begin or "
                           f"{v.name}.end; a reshape to `{v.name} * 2` rows merges the tile: "
                           "view the tensor in host code (x.view(2 * m, n // 2)) and tile that")
        if isinstance(v, TensorRef) and v.ndim == 0:  # a 0-d tensor: its one element
            return self.b.emit("load", [], {"tensor": v, "index": []})
        if isinstance(v, TensorRef):
            raise self.err(KernelTypeError, f"tensor {v.name!r} used directly in device "
                           "arithmetic", hint=f"load a block first, e.g. {v.name}[tm, :]")
        raise self.err(KernelTypeError, f"{type(v).__name__} {v!r} cannot be used as a "
                       "block or number")

    # ------------------------------------------------------------------ operators
    def binop(self, op: ast.operator, a: Any, b: Any, node: ast.AST | None = None) -> Any:
        if not isinstance(a, Value) and not isinstance(b, Value) and _is_num(a) and _is_num(b):
            return _PYOPS[type(op)](a, b)
        name = _BINOPS.get(type(op))
        if name is None:
            raise self.err(KernelSyntaxError, f"operator `{type(op).__name__}` is not supported "
                           "on blocks", hint="use +, -, *, /, //, %, **, @, &, |, ^, <<, >>", node=node)
        if name == "matmul":
            return self.matmul(a, b)
        return self.b.emit(name, [self.operand(a), self.operand(b)])

    # ------------------------------------------------------------------ attributes
    def attribute(self, base: Any, attr: str, node: ast.AST) -> Any:
        if isinstance(base, TileInfo):
            if attr == "index":
                return self.b.emit("tile_index", [], {"tile": base}, f"{base.name}_index")
            if attr in ("begin", "end", "block_size", "id", "count"):
                return self.b.emit("tile_attr", [], {"tile": base, "attr": attr},
                                   f"{base.name}_{attr}")
            raise self.err(KernelSyntaxError, f"tiles have no attribute {attr!r}",
                           hint="use .index, .begin, .end, .block_size or .id", node=node)
        if isinstance(base, TensorRef):
            if attr == "dtype":
                return base.dtype
            if attr == "shape":
                return tuple(self.b.tensor_size(base, d) for d in range(base.ndim))
            if attr == "ndim":
                return base.ndim
            if attr == "device":
                return None  # device= of a block factory: blocks live where the kernel runs
            if attr in ("size", "stride", "dim", "item", *factories.NEW_METHODS):
                return ("method", base, attr)
            raise self.err(KernelSyntaxError, f"tensor attribute {attr!r} is not available in "
                           "device code", hint="read it in host code and pass the value",
                           node=node)
        if isinstance(base, Value):
            if attr == "dtype":
                return base.dtype
            if attr == "device":
                return None
            if attr in ("T", "mT"):
                return self.b.emit("trans", [base])
            if attr == "shape":
                raise self.err(KernelSyntaxError, "block shapes are not available as numbers",
                               hint="use tile attributes (tm.block_size) or tensor sizes",
                               node=node)
            if attr in METHODS:
                return ("method", base, METHODS[attr])
            raise self.err(KernelSyntaxError, f"block method {attr!r} is not supported",
                           node=node)
        if isinstance(base, tuple) and attr in ("values", "indices") and \
                isinstance(base, MaxResult):
            return getattr(base, attr)
        value = getattr(base, attr, None)
        if value is None and not hasattr(base, attr):
            raise self.err(KernelSyntaxError, f"`{ast.unparse(node)}` is not defined", node=node)
        return value

    # ------------------------------------------------------------------ indexing
    def subscript(self, node: ast.Subscript) -> Any:
        base = self.expr(node.value)
        if isinstance(base, TensorRef):
            index = self.tensor_index(base, node.slice, node)
            return self.b.emit("load", [], {"tensor": base, "index": index})
        if isinstance(base, Value):
            return self.value_view(base, node.slice, node)
        if isinstance(base, tuple):
            key = self.expr(node.slice)
            if isinstance(key, int):
                return base[key]
            raise self.err(KernelSyntaxError, f"a list or tuple of host values is indexed with "
                           f"{_desc(key)}: only python ints pick an entry at compile time",
                           hint="unroll the loop: `for k in ts.static_range(n)` makes k an "
                           "int", node=node)
        raise self.err(KernelSyntaxError, f"cannot index {type(base).__name__} in device code",
                       node=node)

    def _entries(self, sl: ast.AST) -> list[ast.AST]:
        return list(sl.elts) if isinstance(sl, ast.Tuple) else [sl]

    def tensor_index(self, ref: TensorRef, sl: ast.AST, node: ast.AST) -> list[Index]:
        entries = self._entries(sl)
        out: list[Index] = []
        axis = 0
        n_real = sum(1 for e in entries if not (isinstance(e, ast.Constant) and e.value is None)
                     and not (isinstance(e, ast.Constant) and e.value is Ellipsis))
        for e in entries:
            if isinstance(e, ast.Constant) and e.value is Ellipsis:
                for _ in range(ref.ndim - n_real):
                    out.append(self._full(ref, axis))
                    axis += 1
                continue
            if isinstance(e, ast.Slice):
                if axis >= ref.ndim:
                    raise self.err(KernelTypeError, f"too many indices for {ref.ndim}-D tensor "
                                   f"{ref.name!r}", node=node)
                if e.lower is not None or e.upper is not None or e.step is not None:
                    out.append(slices.bounded_slice(self, ref, axis, e, node))
                    axis += 1
                    continue
                out.append(self._full(ref, axis))
                axis += 1
                continue
            v = self.expr(e)
            if v is None:
                out.append(Index("none"))
                continue
            if axis >= ref.ndim:
                raise self.err(KernelTypeError, f"too many indices for {ref.ndim}-D tensor "
                               f"{ref.name!r}", node=node)
            if isinstance(v, TileInfo):
                out.append(Index("tile", axis, tile=v))
            elif isinstance(v, int) and not isinstance(v, bool):
                out.append(Index("scalar", axis, value=v))
            elif isinstance(v, Value) and not v.dtype.is_floating_point and v.dtype != torch.bool:
                if v.ndim == 0:
                    out.append(Index("scalar", axis, value=v))
                elif any(x.kind == "gather" for x in out):
                    out.append(gathers.paired_gather(self, ref, out, axis, v, node))
                else:  # a gather: the block's dims replace this one (torch's x[idx] shape)
                    out.append(Index("gather", axis, value=v))
            elif isinstance(v, tuple) and all(isinstance(t, TileInfo) for t in v):
                for t in v:
                    out.append(Index("tile", axis, tile=t))
                    axis += 1
                continue
            else:
                raise self.err(KernelTypeError, f"cannot index tensor {ref.name!r} with "
                               f"{_desc(v)}", hint="index with tiles, ints, `:`, None, or an "
                               "integer block", node=node)
            axis += 1
        while axis < ref.ndim:
            out.append(self._full(ref, axis))
            axis += 1
        for e in out:
            if e.axis is not None:
                self.b.tensor_stride(ref, e.axis)
        return out

    def _full(self, ref: TensorRef, axis: int) -> Index:
        size = self.b.tensor_size(ref, axis)
        dim = FullDim(f"{ref.name}.size({axis})", size)
        self.b.full_dims.append(dim)
        return Index("full", axis, full=dim)

    def value_view(self, v: Value, sl: ast.AST, node: ast.AST) -> Value:
        v, entries = pieces.cut_slices(self, v, self._entries(sl), node)
        spec: list[str] = []
        dims: list[Any] = []
        src = 0
        for e in entries:
            if isinstance(e, ast.Slice) and e.lower is None and e.upper is None and e.step is None:
                if src >= v.ndim:
                    raise self.err(KernelTypeError, "too many indices for the block", node=node)
                spec.append(":")
                dims.append(v.shape[src])
                src += 1
            elif isinstance(e, ast.Constant) and e.value is None:
                spec.append("None")
                dims.append(ConstDim(1))
            elif _int_literal(e) is not None:
                if src >= v.ndim or not v.shape[src].same(ConstDim(1)) or \
                        _int_literal(e) not in (0, -1):
                    raise self.err(KernelSyntaxError, f"indexing a block with `{ast.unparse(e)}` "
                                   "is only supported on a size-1 dimension (to drop it)",
                                   hint="blocks take `:`, None, and 0 on size-1 dims; index the "
                                   "tensor instead", node=node)
                spec.append("squeeze")
                src += 1
            elif isinstance(e, ast.Constant) and e.value is Ellipsis:
                n = v.ndim - sum(1 for x in entries if isinstance(x, ast.Slice))
                for _ in range(n):
                    spec.append(":")
                    dims.append(v.shape[src])
                    src += 1
            else:
                raise self.err(KernelSyntaxError, f"indexing a block with `{ast.unparse(e)}` is "
                               "not supported", hint="blocks take only `:` and None (to add "
                               "dims); index the tensor instead", node=node)
        while src < v.ndim:
            spec.append(":")
            dims.append(v.shape[src])
            src += 1
        return self.b.emit("view", [v], {"dims": tuple(dims), "spec": tuple(spec)})

    def store(self, ref: TensorRef, sl: ast.AST, value: Any, node: ast.AST) -> None:
        index = self.tensor_index(ref, sl, node)
        self.b.emit("store", [self.operand(value)], {"tensor": ref, "index": index})

    # ------------------------------------------------------------------ calls
    def call(self, node: ast.Call) -> Any:
        fobj = self.expr(node.func) if not isinstance(node.func, ast.Name) else \
            self.b.lookup(node.func.id, node.func)
        args = [self.expr(a) for a in node.args]
        kwargs = {k.arg: self.expr(k.value) for k in node.keywords if k.arg}
        if isinstance(fobj, tuple) and len(fobj) == 3 and fobj[0] == "method":
            _, base, meth = fobj
            if isinstance(base, TensorRef) and meth in factories.NEW_METHODS:
                return factories.new_block(self, base.dtype, meth, args, kwargs, node)
            if isinstance(base, TensorRef):
                return self.tensor_method(base, meth, args, node)
            return self.method(base, meth, args, kwargs, node)
        if is_missing(fobj):
            raise self.err(KernelSyntaxError, f"`{ast.unparse(node.func)}` is not defined",
                           node=node)
        try:
            name = FUNCTIONS.get(fobj)
        except TypeError:
            name = None
        if name is None and inline.is_helper(fobj):
            return inline.inline_call(self.b, fobj, args, kwargs, node)
        if name is None:
            return self._unknown_call(fobj, node, args)
        from torchship.kernels.frontend import funcs

        return funcs.call(self, name, args, kwargs, node)

    def _unknown_call(self, fobj: Any, node: ast.Call, args: list[Any]) -> Any:
        text = ast.unparse(node.func)
        if fobj is print:
            raise self.err(KernelSyntaxError, "`print` in device code is not supported",
                           hint="return the values you want to see in an output tensor, or "
                           "run with TORCHSHIP_INTERPRET=1 where print works", node=node)
        if isinstance(fobj, type) and fobj in (tuple, list) and all(
                not isinstance(a, Value) for a in args):
            return tuple(*args)
        if fobj is len and len(args) == 1 and isinstance(args[0], tuple):
            return len(args[0])  # a captured list of host values: its length is static
        if fobj is slice and all(not isinstance(a, Value) for a in args):
            return slice(*args)  # an index written `slice(None)` where `:` cannot be (a list)
        if fobj is range or fobj is language.tile or fobj is language.grid:
            raise self.err(KernelSyntaxError, f"`{text}` can only be used as a for-loop iterable",
                           node=node)
        if fobj in (torch.rand, torch.rand_like, torch.randn, torch.randn_like, torch.randint,
                    torch.randint_like, torch.bernoulli, torch.normal, F.dropout):
            raise self.err(KernelSyntaxError, f"random numbers (`{text}`) are not supported in "
                           "device code: torch's generator has no seed a kernel can share",
                           hint="use ts.rand([tm, tn], seed) with an int seed argument (uniform "
                           "[0, 1); ts.randn for normal; dropout: torch.where(ts.rand([tm, tn], seed) >= p, "
                           "x[tm, tn] / (1 - p), 0.0)), or draw in host code and pass the "
                           "tensor in", node=node)
        if fobj in (torch.empty_like, torch.tensor):
            raise self.err(KernelSyntaxError, f"`{text}` allocates a tensor: not allowed in "
                           "device code", hint="allocate outputs in host code before the tile "
                           "loop; for blocks use torch.zeros([tm, tn]) / ts.full(...)",
                           node=node)
        mod = getattr(fobj, "__module__", "") or ""
        if mod.startswith("torch") or getattr(fobj, "__name__", "") in dir(torch):
            raise self.err(KernelSyntaxError, f"unsupported torch op `{text}` in device code",
                           hint=f"supported: arithmetic, {'/'.join(TORCH_UNARY)}, "
                           "maximum/minimum/where/pow/atan2/clamp, F.relu/gelu/silu and the other "
                           "F activations, cumsum/cumprod, sum/prod/mean/amax/amin/max/argmax/"
                           "any/all/var/std/logsumexp/norm, softmax/log_softmax, matmul/addmm, "
                           "ts.dot/zeros/full/atomic_add (docs/kernels.md lists them all)",
                           node=node)
        raise self.err(KernelSyntaxError, f"cannot call `{text}` in device code",
                       hint="device code may call torch ops, ts.* functions and plain `def` "
                       "helpers (they are inlined); wrap the call in such a def", node=node)

    def tensor_method(self, ref: TensorRef, meth: str, args: list[Any], node: ast.AST) -> Any:
        if meth == "dim":
            return ref.ndim
        if meth == "item":
            if ref.ndim:
                raise self.err(KernelTypeError, f"{ref.name}.item() needs a 0-d tensor, "
                               f"{ref.name!r} has {ref.ndim} dims",
                               hint=f"index one element: {ref.name}[i].item()", node=node)
            return elementwise.item(self, "item", [self.operand(ref)], {}, node)
        if len(args) != 1 or not isinstance(args[0], int):
            if meth == "size" and not args:
                return tuple(self.b.tensor_size(ref, d) for d in range(ref.ndim))
            raise self.err(KernelSyntaxError, f"{ref.name}.{meth}() takes one int dimension",
                           node=node)
        d = args[0] % ref.ndim if ref.ndim else 0
        if meth == "size":
            return self.b.tensor_size(ref, d)
        return self.b.tensor_stride(ref, d)

    def method(self, base: Value, meth: str, args: list[Any], kwargs: dict[str, Any],
               node: ast.AST) -> Any:
        from torchship.kernels.frontend import funcs

        if meth in _DTYPE_METHODS:
            return self.b.emit("to", [base], {"dtype": _DTYPE_METHODS[meth]})
        if meth == "type_as":
            return self.b.emit("to", [base], {"dtype": args[0].dtype})
        if meth == "t" or (meth == "transpose" and sorted(a % base.ndim for a in args)
                           == [base.ndim - 2, base.ndim - 1]):
            return self.b.emit("trans", [base])
        if meth == "transpose":
            order = list(range(base.ndim))
            a, b = (int(d) % base.ndim for d in args[:2])
            order[a], order[b] = b, a
            return pieces.permute(self, base, order, node)
        if meth == "squeeze":
            return self.squeeze(base, args[0] if args else kwargs.get("dim"), node)
        if meth == "unsqueeze":
            d = (args[0] if args else kwargs["dim"]) % (base.ndim + 1)
            spec = [":"] * base.ndim
            spec.insert(d, "None")
            dims = list(base.shape)
            dims.insert(d, ConstDim(1))
            return self.b.emit("view", [base], {"dims": tuple(dims), "spec": tuple(spec)})
        if meth == "clip":
            meth = "clamp"
        return funcs.call(self, meth, [base, *args], kwargs, node)

    def squeeze(self, v: Value, dim: Any, node: ast.AST) -> Value:
        """``v.squeeze(dim)``: drop the given dims, which must have size 1 in the block."""
        if dim is None:
            raise self.err(KernelSyntaxError, "squeeze() without dim is not supported in device "
                           "code (a tile's last block can have size 1)",
                           hint="name the size-1 dims: v.squeeze(1) or v.squeeze((0, 2))",
                           node=node)
        dims = {d % v.ndim for d in (dim if isinstance(dim, tuple) else (dim,))}
        for d in dims:
            if not v.shape[d].same(ConstDim(1)):
                raise self.err(KernelSyntaxError, f"squeeze({d}) of the block {v.shape_str()}: "
                               "only dims of size 1 (keepdim=True, None, ts.zeros([.., 1])) can "
                               "be dropped", hint="reduce the dim (.sum(dim)) or index the "
                               "tensor instead", node=node)
        if len(dims) == v.ndim:
            raise self.err(KernelSyntaxError, "dropping every dimension of a block is not "
                           "supported", hint="reduce it with .sum() instead", node=node)
        spec = tuple("squeeze" if d in dims else ":" for d in range(v.ndim))
        shape = tuple(s for d, s in enumerate(v.shape) if d not in dims)
        return self.b.emit("view", [v], {"dims": shape, "spec": spec})

    def matmul(self, a: Any, b: Any, acc: Any = None, out_dtype: Any = None) -> Value:
        from torchship.kernels.ops import promote

        for v in (a, b):
            if not isinstance(v, Value):
                raise self.err(KernelTypeError, f"matmul operand must be a block, got {_desc(v)}")
        if out_dtype is None:
            out_dtype = promote([a, b])[0]
        inputs = [a, b] + ([acc] if acc is not None else [])
        out = self.b.emit("dot", inputs, {"out_dtype": out_dtype})
        self.b.has_dot = True
        for v in (a, b):
            if v.ndim == 3:
                d = v.shape[0].find()
                if isinstance(d, TileDim) and d.tile.param is not None:
                    self.b.registry.params[d.tile.param].dot_batch = True
            for d in v.shape[-2:]:
                d = d.find()
                if isinstance(d, TileDim) and d.tile.param is not None:
                    self.b.registry.params[d.tile.param].in_dot = True
                elif isinstance(d, FullDim):
                    d.used_in_dot = True
        return out


def _int_literal(e: ast.AST) -> int | None:
    if isinstance(e, ast.Constant) and isinstance(e.value, int) and not isinstance(e.value, bool):
        return e.value
    if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.USub):
        inner = _int_literal(e.operand)
        return -inner if inner is not None else None
    return None


def _desc(v: Any) -> str:
    if isinstance(v, Value):
        return f"a {v.dtype} block {v.shape_str()}"
    if isinstance(v, TensorRef):
        return f"tensor {v.name!r}"
    if isinstance(v, TileInfo):
        return f"tile {v.name!r}"
    return f"{type(v).__name__} {v!r}"
