"""Device code: build the Tile IR of one launch site from its AST and captured host values.

:class:`DeviceBuilder` walks the statements of a top-level tile loop. Names resolve to IR
values (device locals), captured host values (tensors, scalars, constants) or the kernel's
globals (``torch``, ``ts``...). Inner ``ts.tile``/``ts.grid``/``range`` loops become
:class:`~torchship.kernels.ir.Loop` regions; a name assigned in the loop body that was bound
before the loop is loop-carried and must keep its shape and dtype. Calls and operators are
mapped to ops in :mod:`torchship.kernels.frontend.calls`.

Example (see tests/kernels/test_compiler.py for kernels end to end):
    >>> from torchship.kernels.frontend.device import DeviceBuilder
    >>> DeviceBuilder.__name__
    'DeviceBuilder'
"""

from __future__ import annotations

import ast
from typing import Any

import torch

from torchship.kernels.errors import KernelError, KernelSyntaxError, KernelTypeError
from torchship.kernels.frontend import captures
from torchship.kernels.frontend.captures import BlockSym, Param, TensorRef
from torchship.kernels.frontend.conditions import host_truth
from torchship.kernels.frontend.host import ParsedKernel, Site, is_missing, resolve_static
from torchship.kernels.ir import Carried, Launch, Loc, Loop, Node, TileInfo, Value
from torchship.kernels.ops import OPS
from torchship.kernels.specs import BlockRegistry

__all__ = ["DeviceBuilder"]


_DEVICE_FORBIDDEN = {
    ast.While: ("`while` loops are not supported in device code",
                "use `for t in ts.tile(n)` or `for i in ts.grid(n)` / `range(n)`"),
    ast.Try: ("`try` is not supported in device code", "move error handling to host code"),
    ast.With: ("`with` is not supported in device code", "move it outside the tile loop"),
    ast.Return: ("`return` inside a tile loop is not supported",
                 "store results into an output tensor and return it after the loop"),
    ast.FunctionDef: ("nested `def` inside a tile loop is not supported",
                      "define helpers at module level as plain torch expressions, or inline"),
    ast.ClassDef: ("`class` inside a tile loop is not supported", "define it in host code"),
    ast.Raise: ("`raise` in device code is not supported", "check inputs in host code"),
    ast.Assert: ("`assert` in device code is not supported", "check inputs in host code"),
    ast.Delete: ("`del` in device code is not supported", "just stop using the name"),
    ast.Global: ("`global` in device code is not supported", "pass the value as an argument"),
    ast.Nonlocal: ("`nonlocal` in device code is not supported", "pass the value explicitly"),
    ast.Import: ("`import` in device code is not supported", "import at module level"),
    ast.ImportFrom: ("`import` in device code is not supported", "import at module level"),
    ast.Break: ("`break` in device code is not supported", "mask with torch.where instead"),
    ast.Continue: ("`continue` in device code is not supported",
                   "mask with torch.where instead"),
}


class DeviceBuilder:
    """Builds the :class:`Launch` IR of one site for one set of captured values."""

    def __init__(
        self,
        parsed: ParsedKernel,
        site: Site,
        tile_args: tuple[Any, ...],
        block_size: Any,
        captures: tuple[Any, ...],
        registry: BlockRegistry,
        syms: list[BlockSym],
    ) -> None:
        self.parsed = parsed
        self.site = site
        self.tile_args = tile_args
        self.block_size = block_size
        self.captures = dict(zip(site.captured, captures))
        self.capture_index = {n: i for i, n in enumerate(site.captured)}
        self.registry = registry
        self.syms = syms
        self.env: dict[str, Any] = {}
        self.region: list[Any] = []
        self.params: list[Param] = []
        self._param_by_getter: dict[str, Param] = {}
        self.specialized: set[int] = set()  # capture indices whose int value is compiled in
        self.full_dims: list[Any] = []
        self.stmt: ast.AST = site.node
        self.loop_locals: dict[str, int] = {}
        self.n_anon = 0
        self.hints: dict[int, Any] = {}  # Value.id -> traced python value
        self.has_dot = False
        self.assigned_at: dict[str, ast.AST] = {}
        self.names_used: set[str] = set()
        self.inline_depth = 0  # helper functions being inlined (frontend/inline.py)
        from torchship.kernels.frontend import calls

        self.calls = calls.CallHandler(self)

    # ------------------------------------------------------------------ errors & emission
    def loc(self, node: ast.AST | None = None) -> Loc:
        return self.parsed.loc(node if node is not None else self.stmt)

    def error(self, cls: type, message: str, hint: str | None = None,
              node: ast.AST | None = None) -> KernelError:
        return self.parsed.error(cls, node if node is not None else self.stmt, message, hint)

    def emit(self, op: str, inputs: list[Any], attrs: dict[str, Any] | None = None,
             name: str = "") -> Value | None:
        """Infer and append one node; returns its output value (None for stores)."""
        attrs = attrs or {}
        opdef = OPS[op]
        try:
            shape, dtype = opdef.infer(inputs, attrs)
        except KernelError as exc:
            if exc.filename is not None:
                raise
            raise self.error(type(exc), exc.message, exc.hint) from None
        out = None
        if op not in ("store", "atomic_add"):
            weak = all((not isinstance(i, Value)) or i.weak for i in inputs) and bool(inputs) \
                and opdef.kind == "pointwise"
            out = Value(shape, dtype, name, weak=weak)
        node = Node(op, list(inputs), attrs, out, self.loc())
        if out is not None:
            out.node = node
        self.region.append(node)
        return out

    # ------------------------------------------------------------------ parameters
    def param(self, name: str, getter: str, dtype: torch.dtype | None, hint: Any) -> Param:
        p = self._param_by_getter.get(getter)
        if p is None:
            base = name
            k = 1
            while name in self.names_used:
                name = f"{base}_{k}"
                k += 1
            self.names_used.add(name)
            value = Value((), dtype, name, weak=True) if dtype is not None else None
            p = Param(name, getter, value, hint=hint)
            if value is not None:
                self.hints[value.id] = hint
            self.params.append(p)
            self._param_by_getter[getter] = p
        return p

    def scalar_param(self, name: str, getter: str, hint: Any) -> Value:
        if isinstance(hint, bool):
            return hint
        dtype = torch.float32 if isinstance(hint, float) else torch.int32
        if isinstance(hint, int) and not -(2**31) <= hint < 2**31:
            dtype = torch.int64
        return self.param(name, getter, dtype, hint).value

    def tensor_size(self, ref: TensorRef, d: int) -> Value:
        if d not in ref.sizes:
            ref.sizes[d] = self.param(f"{ref.name}_size{d}", f"{ref.getter}.shape[{d}]",
                                      torch.int32, ref.hint_shape[d])
        return ref.sizes[d].value

    def tensor_stride(self, ref: TensorRef, d: int) -> Value:
        if d not in ref.strides:
            ref.strides[d] = self.param(f"{ref.name}_stride{d}", f"{ref.getter}.stride({d})",
                                        torch.int32, ref.hint_strides[d])
        return ref.strides[d].value

    def hint(self, x: Any) -> Any:
        if isinstance(x, Value):
            return self.hints.get(x.id)
        return x

    def const_int(self, x: Any, what: str,
                  hint: str = "use a literal such as 64, or a tile") -> int:
        """A compile-time int: a literal, a captured int (then specialised on its value), or
        ``+ - * // %`` of those (``d // 2``)."""
        from torchship.kernels.frontend.constfold import fold_int

        value = fold_int(self, x)
        if value is not None:
            return value
        raise self.error(KernelTypeError, f"{what} must be a compile-time int (a literal or an "
                         "int argument), not a value computed on the device", hint=hint)

    # ------------------------------------------------------------------ names
    def capture(self, name: str) -> Any:
        value = self.captures[name]
        return self.convert(value, name, f"c[{self.capture_index[name]}]")

    def convert(self, value: Any, name: str, getter: str) -> Any:
        if isinstance(value, torch.Tensor) and value.is_complex():
            raise self.error(KernelTypeError, f"tensor {name!r} is {value.dtype}: complex "
                             "tensors are not supported in device code",
                             hint=f"pass torch.view_as_real({name}) (a float tensor with a "
                             "last dim of 2: real and imaginary parts) and compute on the parts")
        if isinstance(value, torch.Tensor):
            ptr = self.param(name, getter, None, None)
            from torchship.kernels.frontend.captures import tdesc_ok

            return TensorRef(ptr.name, getter, value.dtype, value.dim(), tuple(value.shape),
                             tuple(value.stride()), ptr, tdesc_ok(value),
                             value.numel() >= captures.BIG_TENSOR)
        if isinstance(value, bool) or value is None or isinstance(value, (str, torch.dtype)):
            return value
        if isinstance(value, (int, float)):
            return self.scalar_param(name, getter, value)
        if isinstance(value, BlockSym):
            return value
        if isinstance(value, (tuple, list, torch.Size)):
            return tuple(self.convert(v, f"{name}_{i}", f"{getter}[{i}]")
                         for i, v in enumerate(value))
        if callable(value):
            raise self.error(KernelTypeError, f"host value {name!r} is a callable: calling "
                             "functions passed in as arguments is not supported in device code",
                             hint="call a module-level `def` helper by name (it is inlined), "
                             "and pass the tensors it needs as kernel arguments")
        raise self.error(
            KernelTypeError,
            f"host value {name!r} of type {type(value).__name__} cannot be used in device code",
            hint="pass tensors, ints, floats, bools or dtypes into tile loops")

    def lookup(self, name: str, node: ast.AST) -> Any:
        if name in self.env:
            return self.env[name]
        if name in self.loop_locals:
            raise self.error(
                KernelSyntaxError,
                f"{name!r} is assigned inside the loop at line {self.loop_locals[name]} and "
                "is not available after it",
                hint=f"assign {name!r} before the loop (e.g. with ts.zeros) to carry it",
                node=node)
        if name in self.captures:
            value = self.capture(name)
            self.env[name] = value
            return value
        try:
            return self.parsed.lookup(name)
        except KeyError:
            raise self.error(KernelSyntaxError, f"name {name!r} is not defined", node=node) \
                from None

    def static(self, expr: ast.AST) -> Any:
        def look(n: str) -> Any:
            if n in self.env or n in self.captures:
                raise KeyError(n)
            return self.parsed.lookup(n)

        return resolve_static(expr, look)

    # ------------------------------------------------------------------ tiles
    def make_tiles(self, call: ast.Call, values: list[Any], block_size: Any, grid: bool,
                   names: list[str], base_getter: str | None) -> tuple[list[Any], bool]:
        """Tiles (or scalar indices for ts.grid) for one ``ts.tile``/``ts.grid`` call."""
        kind = "tile" if self.static(call.func) is not None else "tile"
        del kind
        if len(values) not in (1, 2):
            raise self.error(KernelSyntaxError, "ts.tile/ts.grid take (size), (begin, end) or "
                             "sequences of those", node=call)
        multi = isinstance(values[0], tuple)
        if len(values) == 1:
            ends = list(values[0]) if multi else [values[0]]
            begins: list[Any] = [0] * len(ends)
        else:
            begins = list(values[0]) if multi else [values[0]]
            ends = list(values[1]) if multi else [values[1]]
            if len(begins) != len(ends):
                raise self.error(KernelTypeError, f"{len(begins)} begins but {len(ends)} ends",
                                 node=call)
        for v in begins + ends:
            ok = isinstance(v, int) and not isinstance(v, bool)
            ok = ok or (isinstance(v, Value) and v.ndim == 0 and not v.dtype.is_floating_point
                        and v.dtype != torch.bool)
            if not ok:
                raise self.error(
                    KernelTypeError,
                    f"tile/grid bounds must be ints (sizes such as x.size(0)), got "
                    f"{_describe(v)}", hint="use x.size(d), x.shape[d] or an int", node=call)
        if isinstance(block_size, (list, tuple)):
            if len(block_size) != len(ends):
                raise self.error(KernelTypeError, "block_size list length differs from the "
                                 "number of dimensions", node=call)
            sizes = list(block_size)
        else:
            sizes = [block_size] * len(ends)
        if len(names) != len(ends) and not (len(names) == 1 and multi):
            raise self.error(KernelSyntaxError, f"loop target unpacks {len(names)} names but "
                             f"the loop has {len(ends)} dimensions", node=call)
        out: list[Any] = []
        self.last_bounds = (begins, ends)
        for d, (b, e, bs) in enumerate(zip(begins, ends, sizes)):
            name = names[d] if len(names) == len(ends) else f"{names[0]}_{d}"
            if grid:
                out.append(Value((), torch.int32, name))
                continue
            param = fixed = None
            hb, he = self.hint(b), self.hint(e)
            extent = (he - hb) if isinstance(hb, int) and isinstance(he, int) else 1024
            if bs is None:
                key = (self.site.index, self.n_anon)
                self.n_anon += 1
                param = self.registry.get(key, name, 1, 1 << 20, extent, self.stmt is self.site.node)
            elif isinstance(bs, BlockSym):
                param = self.registry.get(("sym", bs.index), name, bs.lo, bs.hi, extent,
                                          self.stmt is self.site.node)
            else:
                fixed = self.const_int(bs, "block_size")
                if fixed < 1 or fixed & (fixed - 1):
                    raise self.error(KernelTypeError, f"block_size={fixed} must be a power of 2",
                                     hint="use 16, 32, 64, ...", node=call)
            out.append(TileInfo(name, param, fixed, b, e, grid=self.stmt is self.site.node))
        return out, multi

    # ------------------------------------------------------------------ launch
    def build(self) -> Launch:
        node = self.site.node
        self.stmt = node
        names = _target_names(self.parsed, node.target)
        args = []
        n_args = len(self.tile_args)
        for i, v in enumerate(self.tile_args):
            role = "end" if i == n_args - 1 else "begin"
            if isinstance(v, (tuple, list, torch.Size)):
                args.append(tuple(
                    self.convert(x, f"{names[d] if d < len(names) else names[0]}_{role}",
                                 f"a[{i}][{d}]") for d, x in enumerate(v)))
            else:
                args.append(self.convert(v, f"{names[0]}_{role}", f"a[{i}]"))
        # rename extent params after the loop variable(s)
        bs = self.block_size
        if isinstance(bs, (list, tuple)):
            bs = [b for b in bs]
        tiles, multi = self.make_tiles(node.iter, args, bs, self.site.kind == "grid", names,
                                       None)
        begins, ends = self.last_bounds
        self._bind_target(node.target, tiles, multi)
        self.region = []
        for stmt in node.body:
            self.statement(stmt)
        launch = Launch(self.site.index, tiles, list(begins), list(ends), self.region, self.params, self.full_dims, self.site.loc,
                        name=self.parsed.fn.__name__)
        launch.grid_bounds = _grid_bounds(args, multi)  # type: ignore[attr-defined]
        return launch

    def _bind_target(self, target: ast.AST, tiles: list[Any], multi: bool) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = tuple(tiles) if multi else tiles[0]
        else:
            for t, tile in zip(target.elts, tiles):
                self.env[t.id] = tile

    # ------------------------------------------------------------------ statements
    def statement(self, stmt: ast.stmt) -> None:
        prev = self.stmt
        self.stmt = stmt
        try:
            self._statement(stmt)
        finally:
            self.stmt = prev

    def _statement(self, stmt: ast.stmt) -> None:
        for cls, (msg, hint) in _DEVICE_FORBIDDEN.items():
            if isinstance(stmt, cls):
                raise self.error(KernelSyntaxError, msg, hint)
        if isinstance(stmt, ast.Expr):
            if isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                return  # docstring-like comment
            self.expr(stmt.value)
            return
        if isinstance(stmt, ast.Pass):
            return
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if stmt.value is None:
                return
            value = self.expr(stmt.value)
            for t in targets:
                self.assign(t, value)
            return
        if isinstance(stmt, ast.AugAssign):
            if isinstance(stmt.target, ast.Subscript):
                current = self.expr(ast.Subscript(stmt.target.value, stmt.target.slice,
                                                  ast.Load()))
            elif isinstance(stmt.target, ast.Name):
                current = self.lookup(stmt.target.id, stmt.target)
            else:
                raise self.error(KernelSyntaxError, "augmented assignment to this target is "
                                 "not supported", hint="write `name = name + value`")
            value = self.calls.binop(stmt.op, current, self.expr(stmt.value))
            self.assign(stmt.target, value)
            return
        if isinstance(stmt, ast.For):
            self.loop(stmt)
            return
        if isinstance(stmt, ast.If):
            cond = self.expr(stmt.test)
            known = host_truth(self, cond) if isinstance(cond, Value) else None
            cond = cond if known is None else known
            if isinstance(cond, Value):
                raise self.error(
                    KernelSyntaxError,
                    "data-dependent `if` on a device value is not supported",
                    hint="compute both sides and select with torch.where(cond, a, b); "
                    "`if` works on host constants (bool arguments, dtypes)")
            if isinstance(cond, (torch.Tensor, TensorRef)):
                raise self.error(KernelSyntaxError, "`if` on a tensor is not supported",
                                 hint="use torch.where")
            for s in stmt.body if cond else stmt.orelse:
                self.statement(s)
            return
        raise self.error(KernelSyntaxError,
                         f"`{type(stmt).__name__}` statements are not supported in device code",
                         hint="keep device code to assignments, stores, tile loops and calls")

    def assign(self, target: ast.AST, value: Any) -> None:
        if isinstance(target, ast.Name):
            self.assigned_at[target.id] = self.stmt
            if isinstance(value, Value) and value.node is not None and not value.name:
                value.name = target.id
                src = value.node.inputs[0] if value.node.inputs else None
                if value.node.op == "to" and isinstance(src, Value) and src.node is not None \
                        and not src.name and src.dtype == value.dtype:
                    src.name = target.id
            self.env[target.id] = value
            return
        if isinstance(target, (ast.Tuple, ast.List)):
            if not isinstance(value, tuple) or len(value) != len(target.elts):
                raise self.error(KernelTypeError, f"cannot unpack {_describe(value)} into "
                                 f"{len(target.elts)} names")
            for t, v in zip(target.elts, value):
                self.assign(t, v)
            return
        if isinstance(target, ast.Subscript):
            base = self.expr(target.value)
            if not isinstance(base, TensorRef):
                raise self.error(
                    KernelSyntaxError, f"cannot assign into {_describe(base)}",
                    hint="store into a tensor argument (out[tm, tn] = value); blocks are "
                    "immutable: use torch.where to change some lanes")
            self.calls.store(base, target.slice, value, target)
            return
        raise self.error(KernelSyntaxError, f"cannot assign to `{ast.unparse(target)}`",
                         hint="assign to a name, or store into a tensor with out[idx] = v")

    def loop(self, stmt: ast.For) -> None:
        if stmt.orelse:
            raise self.error(KernelSyntaxError, "`for ... else` is not supported",
                             hint="remove the else block")
        it = stmt.iter
        if not isinstance(it, ast.Call):
            raise self.error(KernelSyntaxError, "device loops must iterate over ts.tile(...), "
                             "ts.grid(...) or range(...)", hint="for tk in ts.tile(k): ...")
        fn = self.static(it.func)
        from torchship.kernels import language

        if fn is language.static_range:
            self._unrolled(stmt, it)
            return
        if fn is range:
            grid = True
            values = [self.expr(a) for a in it.args]
            if len(values) == 3:
                raise self.error(KernelSyntaxError, "range() with a step is not supported in "
                                 "device code", hint="use ts.tile(n, block_size=step)")
            values = values if len(values) == 2 else values
        elif fn is language.tile or fn is language.grid:
            grid = fn is language.grid
            values = [self.expr(a) for a in it.args]
        else:
            raise self.error(KernelSyntaxError, f"cannot loop over `{ast.unparse(it)}` in "
                             "device code", hint="use ts.tile(...), ts.grid(...) or range(n)")
        bs = None
        for kw in it.keywords:
            if kw.arg != "block_size" or grid:
                raise self.error(KernelSyntaxError, f"unexpected keyword {kw.arg!r}")
            bs = self.expr(kw.value)
        names = _target_names(self.parsed, stmt.target)
        tiles, multi = self.make_tiles(it, values, bs, grid, names, None)
        assigned = _assigned_in(stmt.body)
        before = set(self.env) | set(self.captures)
        carried_names = sorted(n for n in assigned & before if n not in names)
        carried: list[Carried] = []
        saved_env = dict(self.env)
        for name in carried_names:
            init = self.lookup(name, stmt)
            if not isinstance(init, Value):
                raise self.error(
                    KernelTypeError,
                    f"{name!r} is rebound inside the loop but holds {_describe(init)} before it",
                    hint=f"initialise it as a block before the loop, e.g. "
                    f"{name} = ts.zeros([tm], dtype=torch.float32) (ts.zeros([]) for a scalar)")
            phi = Value(init.shape, init.dtype, name)
            carried.append(Carried(name, init, phi))
            self.env[name] = phi
        self._bind_target(stmt.target, tiles, multi)
        outer = self.region
        self.region = []
        for s in stmt.body:
            self.statement(s)
        body = self.region
        self.region = outer
        for c in carried:
            final = self.env[c.name]
            ok = isinstance(final, Value) and final.dtype == c.phi.dtype and \
                len(final.shape) == len(c.phi.shape) and \
                all(_unify(a, b) for a, b in zip(final.shape, c.phi.shape))
            if not ok:
                raise self.error(
                    KernelTypeError,
                    f"loop-carried value {c.name!r} changes type in the loop: "
                    f"{c.phi.shape_str()} before, {_describe(final)} after one iteration",
                    hint=f"keep {c.name!r} the same dtype and shape, e.g. cast with "
                    f".to({c.phi.dtype}) before assigning",
                    node=self.assigned_at.get(c.name, stmt))
            c.final = final
        for name in assigned - set(carried_names):
            if name in saved_env:
                self.env[name] = saved_env[name]
            else:
                self.env.pop(name, None)
                self.loop_locals[name] = self.loc(stmt).lineno
        for c in carried:
            self.env[c.name] = c.phi
        begins = [t.begin if isinstance(t, TileInfo) else (values[0] if len(values) == 2 else 0)
                  for t in tiles]
        ends = [t.end if isinstance(t, TileInfo) else values[-1] for t in tiles]
        if grid and multi:
            begins = list(values[0]) if len(values) == 2 else [0] * len(tiles)
            ends = list(values[-1])
        self.region.append(Loop([t for t in tiles if isinstance(t, TileInfo)],
                                [t for t in tiles if isinstance(t, Value)], begins, ends, body,
                                carried, self.loc(stmt)))

    def _unrolled(self, stmt: ast.For, it: ast.Call) -> None:
        """``for k in ts.static_range(...)``: the body traced once per value, ``k`` an int."""
        if it.keywords or not 1 <= len(it.args) <= 2:
            raise self.error(KernelSyntaxError, "ts.static_range takes (end) or (begin, end)",
                             hint="for k in ts.static_range(3): ...")
        bounds = [self.const_int(self.expr(a), "a ts.static_range bound",
                                 hint="read it in host code, before the tile loop "
                                 "(`k = w.size(1)`), and loop over ts.static_range(k)")
                  for a in it.args]
        if not isinstance(stmt.target, ast.Name):
            raise self.error(KernelSyntaxError, "ts.static_range binds one name",
                             hint="for k in ts.static_range(3): ...")
        for k in range(*bounds):
            self.env[stmt.target.id] = k
            for s in stmt.body:
                self.statement(s)

    # ------------------------------------------------------------------ expressions
    def expr(self, node: ast.AST) -> Any:
        return self.calls.expr(node)


def _grid_bounds(args: list[Any], multi: bool) -> Any:
    return args


def _unify(a: Any, b: Any) -> bool:
    from torchship.kernels.ir import ConstDim, FullDim

    fa, fb = a.find(), b.find()
    if isinstance(fa, FullDim) and isinstance(fb, FullDim):
        fa.union(fb)
        return True
    if isinstance(fa, FullDim) and isinstance(fb, ConstDim) and fb.n > 1:
        fa.make_static(fb.n)
    if isinstance(fb, FullDim) and isinstance(fa, ConstDim) and fa.n > 1:
        fb.make_static(fa.n)
    return fa.same(fb)


def _describe(v: Any) -> str:
    if isinstance(v, Value):
        return f"a block {v.shape_str()}"
    if isinstance(v, TensorRef):
        return f"tensor {v.name!r}"
    if isinstance(v, TileInfo):
        return f"tile {v.name!r}"
    return f"{type(v).__name__} {v!r}"


def _target_names(parsed: ParsedKernel, target: ast.AST) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Name)
                                                        for e in target.elts):
        return [e.id for e in target.elts]
    raise parsed.error(KernelSyntaxError, target, "loop targets must be names",
                       hint="for tm, tn in ts.tile([m, n]): ...")


def _assigned_in(body: list[ast.stmt]) -> set[str]:
    """Names a loop body rebinds, less the targets of its nested loops (bound afresh by each
    loop, so a tile name reused by a later sibling loop is not loop-carried)."""
    out: set[str] = set()
    targets: set[int] = set()
    for stmt in body:
        for n in ast.walk(stmt):
            if isinstance(n, ast.For):
                targets.update(id(t) for t in ast.walk(n.target))
    for stmt in body:
        for n in ast.walk(stmt):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and id(n) not in targets:
                out.add(n.id)
    return out


__all__ += ["is_missing"]
