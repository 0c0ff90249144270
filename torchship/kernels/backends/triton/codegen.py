"""Emit Triton source for one launch of the Tile IR under one Config.

One statement per IR value, named after the user's variables, with ``# file.py:LINE  source``
comments. Full (``:``) dimensions are either one padded block (persistent reduction) or, when
``Config.reduction_loops`` says so, rolled into chunk loops: values that contain a rolled dim
are not emitted where they are defined but recomputed inside the loop of each consumer that
removes the dim (a reduction over it, a ``dot`` contracting it, a store).

Example (see tests/kernels/test_codegen.py):
    >>> TritonCodegen.tl_dtype(__import__("torch").bfloat16)
    'tl.bfloat16'
"""

from __future__ import annotations

import keyword
import math
import re
from typing import Any

import torch

from torchship.kernels.backends.triton import indexing
from torchship.kernels.backends.triton.reductions import ReductionEmitter
from torchship.kernels.config import Config
from torchship.kernels.errors import KernelTypeError
from torchship.kernels.ir import ConstDim, FullDim, Launch, Loop, Node, TileDim, TileInfo, Value
from torchship.kernels.ops import OPS

_TL = {torch.float16: "tl.float16", torch.bfloat16: "tl.bfloat16", torch.float32: "tl.float32",
       torch.float64: "tl.float64", torch.int8: "tl.int8", torch.int16: "tl.int16",
       torch.int32: "tl.int32", torch.int64: "tl.int64", torch.uint8: "tl.uint8",
       torch.bool: "tl.int1", torch.float8_e4m3fn: "tl.float8e4nv",
       torch.float8_e5m2: "tl.float8e5"}


#: per fp8 type: fp32 mantissa bits it drops (23 - its own), and -log2 of its subnormal step
_FP8_DROP = {torch.float8_e4m3fn: (20, 9), torch.float8_e5m2: (21, 16)}


class _Ctx:
    """Names visible at one point of the emitted code (chunk loops open child contexts)."""

    def __init__(self, parent: _Ctx | None = None) -> None:
        self.parent = parent
        self.names: dict[int, str] = {}
        self.dims: dict[int, tuple[str, str | None, str, str]] = {}  # id -> (idx, mask, blk, off)
        self.rolled: set[int] = set() if parent is None else set(parent.rolled)

    def lookup(self, vid: int) -> str | None:
        c: _Ctx | None = self
        while c is not None:
            if vid in c.names:
                return c.names[vid]
            c = c.parent
        return None

    def dim(self, did: int) -> tuple[str, str | None, str, str] | None:
        c: _Ctx | None = self
        while c is not None:
            if did in c.dims:
                return c.dims[did]
            c = c.parent
        return None


class TritonCodegen(ReductionEmitter):
    """Generate the Triton kernel for ``launch`` with ``config``.

    ``reduction_index`` maps a full dim's root id to its ``Config.reduction_loops`` slot.
    """

    def __init__(self, launch: Launch, config: Config, reduction_index: dict[int, int],
                 kernel_name: str, indexing_mode: str, interpret: bool = False) -> None:
        self.launch = launch
        self.config = config
        self.reduction_index = reduction_index
        self.kernel_name = kernel_name
        self.indexing = indexing_mode
        # Triton's interpreter computes bf16 tl.dot wrongly (numpy has no bf16): upcast there
        self.interpret = interpret
        self.lines: list[str] = []
        self.indent = 1
        self.used: set[str] = set(keyword.kwlist) | {"tl", "triton", "float", "range", "min",
                                                      "max", "abs", "int"}
        self.constexprs: dict[str, str] = {}  # name -> host expression (for the launcher)
        self.block_names: dict[int, str] = {}
        self.tile_vars: dict[int, dict[str, str]] = {}
        self.ctx = _Ctx()
        self.last_loc: Any = None
        self.prologue_at: int | None = None  # where hoisted set-up lines go (see generate)
        self.hoisted: dict[str, str] = {}  # hoisted expression -> its name
        self.helpers: dict[str, str] = {}  # module-level @triton.jit helpers: name -> source
        self.host_descs: list[Any] = []  # descriptor parameters the launcher builds (indexing)
        for p in launch.args:
            self.used.add(p.name)
            if p.value is not None:
                self.ctx.names[p.value.id] = p.name

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def tl_dtype(dtype: torch.dtype) -> str:
        """The ``tl`` dtype for a torch dtype."""
        if dtype not in _TL:
            raise KernelTypeError(f"dtype {dtype} is not supported in kernels")
        return _TL[dtype]

    tl = tl_dtype

    def fresh(self, hint: str) -> str:
        base = re.sub(r"\W", "_", hint or "v") or "v"
        if base[0].isdigit():
            base = "v" + base
        name, k = base, 1
        while name in self.used:
            name = f"{base}_{k}"
            k += 1
        self.used.add(name)
        return name

    def line(self, text: str) -> None:
        self.lines.append("    " * self.indent + text)

    def comment_for(self, node: Any) -> None:
        loc = getattr(node, "loc", None)
        if loc is not None and loc != self.last_loc:
            self.last_loc = loc
            self.line(f"# {loc.short()}  {loc.source}")

    def literal(self, v: Any) -> str:
        if isinstance(v, bool):
            return "True" if v else "False"
        if isinstance(v, float):
            if math.isinf(v):
                return 'float("inf")' if v > 0 else 'float("-inf")'
            if math.isnan(v):
                return 'float("nan")'
        return repr(v)

    def coerce(self, operand: Any, expr: str, dtype: torch.dtype | None,
               force: bool = False) -> str:
        if not isinstance(operand, Value):
            if dtype is not None and isinstance(operand, (int, float)) and force:
                return f"tl.full([], {self.literal(operand)}, {self.tl(dtype)})"
            return expr
        if self.interpret and dtype == torch.bfloat16 and not force:
            dtype = torch.float32  # the interpreter cannot do bf16 arithmetic (no numpy bf16)
        if dtype is None or operand.dtype == dtype:
            return expr
        if self.interpret and dtype in _FP8_DROP and operand.shape:
            # the interpreter's float -> fp8 conversion drops the carry into the exponent when
            # it rounds up (124.3 -> 64.0 in e4m3): round the fp32 bits to the fp8 mantissa
            # here (nearest even), so the conversion itself is exact
            drop, sub = _FP8_DROP[dtype]
            f32 = expr if operand.dtype == torch.float32 else f"{expr}.to(tl.float32)"
            bits = f"{f32}.to(tl.int32, bitcast=True)"
            half = (1 << (drop - 1)) - 1
            normal = (f"(({bits} + {half} + (({bits} >> {drop}) & 1)) & {~((1 << drop) - 1)})"
                      ".to(tl.float32, bitcast=True)")
            # subnormals: a multiple of 2**-sub, rounded to nearest even by an fp32 add
            subnormal = f"(({f32} * {2.0 ** sub} + 12582912.0) - 12582912.0) * {2.0 ** -sub}"
            rounded = (f"tl.where(tl.abs({f32}) < {2.0 ** (23 - drop - sub)}, "
                       f"{subnormal}, {normal})")
            return f"{rounded}.to({self.tl(dtype)})"
        if not operand.shape:  # a scalar argument is a plain Python number in the interpreter
            return f"tl.cast({expr}, {self.tl(dtype)})"
        return f"{expr}.to({self.tl(dtype)})"

    def ref(self, x: Any) -> str:
        """Triton expression of an operand (emitting a deferred value when needed)."""
        if not isinstance(x, Value):
            return self.literal(x)
        name = self.ctx.lookup(x.id)
        if name is not None:
            return name
        if x.node is not None and self.has_rolled(x):
            return self.emit_value_node(x.node)
        raise AssertionError(f"value {x!r} used before it was emitted")

    def rolled_root(self, d: Any) -> FullDim | None:
        r = d.find()
        if isinstance(r, FullDim) and self.chunk_of(r) is not None:
            return r
        return None

    def chunk_of(self, root: FullDim) -> int | None:
        slot = self.reduction_index.get(root.id)
        if slot is None or slot >= len(self.config.reduction_loops):
            return None
        return self.config.reduction_loops[slot]

    def has_rolled(self, v: Value) -> bool:
        """True for a value with a rolled (looped-reduction) dim: emitted lazily."""
        return any(self.rolled_root(d) is not None for d in v.shape)

    def is_deferred(self, v: Value) -> bool:
        """True for a value with a rolled dim that is not open in the current context."""
        for d in v.shape:
            r = self.rolled_root(d)
            if r is not None and self.ctx.dim(r.id) is None:
                return True
        return False

    def dim_info(self, d: Any) -> tuple[str, str | None, str]:
        """(index expr, mask expr or None, block size expr) of a dim."""
        return self._dim4(d)[:3]

    def dim_offset(self, d: Any) -> str:
        """Where the block of dim ``d`` starts (tile begin, chunk offset or 0)."""
        return self._dim4(d)[3]

    def _dim4(self, d: Any) -> tuple[str, str | None, str, str]:
        r = d.find()
        if isinstance(r, ConstDim):
            return ("0", None, str(r.n), "0")
        info = self.ctx.dim(r.id) if isinstance(r, FullDim) else None
        if isinstance(r, TileDim):
            info = self.ctx.dim(id(r.tile))
        if info is None:
            raise AssertionError(f"dim {r!r} is not open here")
        return info

    @staticmethod
    def b_stride(ref: Any, axis: int) -> Value:
        return ref.strides[axis].value

    def block(self, d: Any) -> str:
        return self.dim_info(d)[2]

    @staticmethod
    def expand(expr: str, pos: int, rank: int) -> str:
        if rank <= 1:
            return expr
        parts = ["None"] * rank
        parts[pos] = ":"
        return f"{expr}[{', '.join(parts)}]"

    def mask_of(self, shape: tuple[Any, ...]) -> str | None:
        masks = []
        for pos, d in enumerate(shape):
            _, m, _ = self.dim_info(d)
            if m is not None:
                masks.append(self.expand(m, pos, len(shape)))
        return " & ".join(masks) if masks else None

    # ------------------------------------------------------------------ tiles
    def block_name(self, tile: TileInfo) -> str:
        if tile.fixed is not None:
            return str(tile.fixed)
        key = tile.param
        if self.config.block_sizes[key] == 1:
            return "1"
        if key not in self.block_names:
            name = self.fresh(f"BLOCK_{tile.name.upper()}")
            self.block_names[key] = name
            self.constexprs[name] = str(self.config.block_sizes[key])
        return self.block_names[key]

    def open_tile(self, tile: TileInfo, begin_expr: str, masked: bool = True) -> None:
        """Emit index/mask of a tile whose block starts at ``begin_expr`` (a name); with
        ``masked=False`` the block is known to be full and gets no mask."""
        blk = self.block_name(tile)
        idx = self.fresh(f"{tile.name}_index")
        self.line(f"{idx} = {begin_expr} + tl.arange(0, {blk})")
        mask: str | None = None
        if masked:
            mask = self.fresh(f"{tile.name}_mask")
            self.line(f"{mask} = {idx} < {self.ref(tile.end)}")
        self.ctx.dims[id(tile)] = (idx, mask, blk, begin_expr)
        self.tile_vars[id(tile)] = {"begin": begin_expr, "block_size": blk}

    def tile_index(self, tile: TileInfo) -> str:
        return self.ctx.dim(id(tile))[0]

    def tile_attr(self, tile: TileInfo, attr: str) -> str:
        tv = self.tile_vars[id(tile)]
        if attr == "begin":
            return tv["begin"]
        if attr == "block_size":
            return f"tl.full([], {tv['block_size']}, tl.int32)"
        if attr == "end":
            return f"tl.minimum({tv['begin']} + {tv['block_size']}, {self.ref(tile.end)})"
        if attr == "count":
            return f"tl.minimum({self.ref(tile.end)} - {tv['begin']}, {tv['block_size']})"
        if attr == "id":
            return f"({tv['begin']} - {self.ref(tile.begin)}) // {tv['block_size']}"
        raise AssertionError(attr)

    # ------------------------------------------------------------------ structure
    def generate(self) -> str:
        la = self.launch
        # full dims: persistent ones are opened once at the top
        for d in la.full_dims:
            r = d.find()
            if self.ctx.dim(r.id) is not None or self.chunk_of(r) is not None:
                continue
            size = self.ref(r.size)
            # "x.size(1)" -> x_r1; a full dim sized by an int argument ("n") -> n_r
            idx = self.fresh(r.label.replace(".size(", "_r").replace(")", "") if "." in r.label
                             else f"{r.label}_r")
            mask: str | None = f"{idx}_mask"
            if r.static is not None:
                rname = str(r.static)
                self.line(f"{idx} = tl.arange(0, {rname})")
                if r.static & (r.static - 1) == 0:
                    mask = None  # the size is checked equal to the block at launch: no padding
                else:
                    self.line(f"{mask} = {idx} < {size}")
            else:
                label = r.label.replace(".size(", "").replace(")", "").upper()
                rname = self.fresh(f"R_{label}")
                exact = self.fresh(f"EXACT_{label}")
                host = self.host_expr(r.size)
                self.constexprs[rname] = f"_pad({host})"
                # a size that is its own padded block (a power of two >= 16) needs no mask; the
                # all-true mask folds away in Triton, so full-dim loads stay vectorised
                self.constexprs[exact] = f"{host} == _pad({host})"
                self.line(f"{idx} = tl.arange(0, {rname})")
                self.line(f"if {exact}:")
                self.line(f"    {mask} = tl.full([{rname}], 1, tl.int1)")
                self.line("else:")
                self.line(f"    {mask} = {idx} < {size}")
            self.ctx.dims[r.id] = (idx, mask, rname, "0")
            if mask is not None:
                self.used.add(mask)
        # loop-invariant set-up (tensor descriptors) is inserted here, before the grid code
        self.prologue_at = len(self.lines)
        self.emit_grid()
        body = "\n".join(self.lines)
        words = set(re.findall(r"[A-Za-z_]\w*", re.sub(r"#[^\n]*", "", body)))
        # parameters the body never reads (e.g. the size of a full dim unified with another)
        # are not passed at all: fewer launch arguments
        self.used_args = [p for p in [*self.launch.args, *self.host_descs] if p.name in words]
        header = self.signature()
        return "\n".join([*self.helpers.values(), header, *self.lines]) + "\n"

    def hoist(self, expr: str, hint: str) -> str:
        """Name for ``expr`` computed once in the kernel prologue, when it only reads kernel
        arguments and constexprs (else ``expr`` itself): e.g. a tensor descriptor used in a
        loop is created once per program, not once per iteration."""
        if self.prologue_at is None:
            return expr
        if expr in self.hoisted:
            return self.hoisted[expr]
        allowed = {p.name for p in self.launch.args} | set(self.constexprs) | {
            "tl", "shape", "strides", "block_shape", "make_tensor_descriptor"}
        words = set(re.findall(r"(?<![.\w])[A-Za-z_]\w*", expr))
        if not words <= allowed:
            return expr
        name = self.fresh(hint)
        self.lines.insert(self.prologue_at, f"    {name} = {expr}")
        self.prologue_at += 1
        self.hoisted[expr] = name
        return name

    def host_expr(self, x: Any) -> str:
        if isinstance(x, Value):
            for p in self.launch.args:
                if p.value is x:
                    return p.getter
            raise KernelTypeError("a grid bound must come from host values (sizes, ints)")
        return repr(x)

    def signature(self) -> str:
        params = [p.name for p in self.used_args]
        params += [f"{n}: tl.constexpr" for n in self.constexprs]
        return f"def {self.kernel_name}({', '.join(params)}):"

    def emit_grid(self) -> None:
        la = self.launch
        loc = la.loc
        self.line(f"# {loc.short()}  {loc.source}  (one program per tile)")
        self.last_loc = loc
        dims = la.grid_tiles
        counts = []
        persistent = self.config.pid_type != "flat"
        for t in dims:
            if len(dims) == 1 and not persistent:
                counts.append("")  # one grid dim, one program per tile: no count needed
                continue
            if isinstance(t, TileInfo):
                n = self.fresh(f"num_{t.name}")
                blk = self.block_name(t)
                self.line(f"{n} = ({self.ref(t.end)} - {self.ref(t.begin)} + {blk} - 1) // {blk}")
            else:
                idx = dims.index(t)
                n = self.fresh(f"num_{t.name}")
                self.line(f"{n} = {self.ref(la.ends[idx])} - {self.ref(la.begins[idx] or 0)}")
            counts.append(n)
        if persistent:
            total = self.fresh("num_tiles")
            self.line(f"{total} = {' * '.join(counts)}")
            pid = self.fresh("virtual_pid")
            ws = ", flatten=True, warp_specialize=True" if self.config.pid_type.endswith("ws") \
                else ""
            self.line(f"for {pid} in tl.range(tl.program_id(0), {total}, tl.num_programs(0){ws}):")
            self.indent += 1
        else:
            pid = self.fresh("pid")
            self.line(f"{pid} = tl.program_id(0)")
        ids = self.decompose(pid, counts)
        for t, i, pid_i in zip(dims, range(len(dims)), ids):
            if isinstance(t, TileInfo):
                b = self.fresh(f"{t.name}_begin")
                self.line(f"{b} = {self.ref(t.begin)} + {pid_i} * {self.block_name(t)}")
                self.open_tile(t, b)
            else:
                name = self.fresh(t.name)
                self.line(f"{name} = {self.ref(la.begins[i] or 0)} + {pid_i}")
                self.ctx.names[t.id] = name
        self.emit_items(la.body)
        if persistent:
            self.indent -= 1

    def decompose(self, pid: str, counts: list[str]) -> list[str]:
        n = len(counts)
        if n == 1:
            return [pid]
        order = list(range(n))
        if self.config.loop_orders:
            idx = getattr(self.launch, "order_slot", None)
            if idx is not None and idx < len(self.config.loop_orders):
                order = self.config.loop_orders[idx]
        ids: list[str] = [""] * n
        group = self.config.l2_grouping
        rest = pid
        # order[-1] varies fastest
        if group > 1 and n >= 2:
            a, b = order[-2], order[-1]
            outer = order[:-2]
            inner_total = self.fresh("tiles_ab")
            self.line(f"{inner_total} = {counts[a]} * {counts[b]}")
            if outer:
                rest_outer = self.fresh("pid_outer")
                self.line(f"{rest_outer} = {pid} // {inner_total}")
                rest = self.fresh("pid_inner")
                self.line(f"{rest} = {pid} % {inner_total}")
            in_group = self.fresh("tiles_in_group")
            self.line(f"{in_group} = {group} * {counts[b]}")
            gid = self.fresh("group_id")
            self.line(f"{gid} = {rest} // {in_group}")
            first = self.fresh("first_tile")
            self.line(f"{first} = {gid} * {group}")
            gsize = self.fresh("group_size")
            self.line(f"{gsize} = tl.minimum({counts[a]} - {first}, {group})")
            ids[a] = self.fresh("pid_" + str(a))
            self.line(f"{ids[a]} = {first} + ({rest} % {in_group}) % {gsize}")
            ids[b] = self.fresh("pid_" + str(b))
            self.line(f"{ids[b]} = ({rest} % {in_group}) // {gsize}")
            if outer:
                self._split(rest_outer, [counts[i] for i in outer], outer, ids)
            return ids
        self._split(pid, counts if order == list(range(n)) else [counts[i] for i in order],
                    order, ids)
        return ids

    def _split(self, pid: str, counts: list[str], dims: list[int], ids: list[str]) -> None:
        rest = pid
        for k in range(len(dims) - 1, -1, -1):
            name = self.fresh(f"pid_{dims[k]}")
            if k == 0:
                self.line(f"{name} = {rest}")
            else:
                self.line(f"{name} = {rest} % {counts[k]}")
                nxt = self.fresh("pid_rest")
                self.line(f"{nxt} = {rest} // {counts[k]}")
                rest = nxt
            ids[dims[k]] = name

    # ------------------------------------------------------------------ items
    def emit_items(self, items: list[Any]) -> None:
        for it in items:
            if isinstance(it, Loop):
                self.emit_loop(it)
            else:
                self.emit_node(it)

    def emit_loop(self, loop: Loop) -> None:
        self.comment_for(loop)
        for c in loop.carried:
            name = self.fresh(c.name)
            init = self.ref(c.init)
            self.line(f"{name} = {init}")
            self.ctx.names[c.phi.id] = name
        opened = 0
        if len(loop.tiles) == 1:
            self.emit_peeled_tile_loop(loop)
            return
        if loop.tiles:
            for t in loop.tiles:
                b = self.fresh(f"{t.name}_begin")
                self.line(f"for {b} in tl.range({self.ref(t.begin)}, {self.ref(t.end)}, "
                          f"{self.block_name(t)}):")
                self.indent += 1
                opened += 1
                self.open_tile(t, b)
        else:
            for v, b, e in zip(loop.scalar_vars, loop.begins, loop.ends):
                name = self.fresh(v.name)
                self.line(f"for {name} in tl.range({self.ref(b)}, {self.ref(e)}):")
                self.indent += 1
                opened += 1
                self.ctx.names[v.id] = name
        self.emit_items(loop.body)
        for c in loop.carried:
            final = self.ref(c.final)
            name = self.ctx.names[c.phi.id]
            if final != name:
                self.line(f"{name} = {final}")
        self.indent -= opened

    def emit_peeled_tile_loop(self, loop: Loop) -> None:
        """A one-tile inner loop as two loops: full blocks with no masks on the tile's dim
        (the usual case: no ``tl.where`` / masked loads per iteration), then the ragged last
        block, if any, with masks. Loop-carried values flow from the first into the second."""
        t = loop.tiles[0]
        blk = self.block_name(t)
        begin, end = self.ref(t.begin), self.ref(t.end)
        full_end = self.fresh(f"{t.name}_full_end")
        self.line(f"{full_end} = {begin} + ({end} - {begin}) // {blk} * {blk}")
        for part, (lo, hi, extra) in enumerate(((begin, full_end, ""),
                                                (full_end, end, ", num_stages=1"))):
            self.line("# full blocks (no masks)" if part == 0 else
                      "# the ragged last block (masked)")
            b = self.fresh(f"{t.name}_begin")
            self.line(f"for {b} in tl.range({lo}, {hi}, {blk}{extra}):")
            self.indent += 1
            self.open_tile(t, b, masked=part == 1)
            self.emit_items(loop.body)
            for c in loop.carried:
                final = self.ref(c.final)
                name = self.ctx.names[c.phi.id]
                if final != name:
                    self.line(f"{name} = {final}")
            self.indent -= 1

    def emit_node(self, node: Node) -> None:
        if node.out is not None and self.has_rolled(node.out):
            return  # recomputed inside the chunk loop of each consumer
        rolled = self.consumer_rolled(node)
        self.comment_for(node)
        if rolled is not None:
            self.emit_chunk_loop(node, rolled)
            return
        self.emit_value_node(node)

    def consumer_rolled(self, node: Node) -> FullDim | None:
        """The rolled dim this node removes (so it needs a chunk loop), if any."""
        cands: list[Any] = []
        if node.op == "reduce":
            cands = [node.inputs[0].shape[node.attrs["dim"]]]
        elif node.op == "dot":
            cands = [node.inputs[0].shape[-1]]
        elif node.op in ("store", "atomic_add"):
            from torchship.kernels.ops.memory import index_shape

            cands = list(index_shape(node.attrs["index"]))
            if isinstance(node.inputs[0], Value):
                cands += list(node.inputs[0].shape)
        for d in cands:
            r = self.rolled_root(d)
            if r is not None and self.ctx.dim(r.id) is None:
                return r
        return None

    def emit_value_node(self, node: Node) -> str:
        op = OPS[node.op]
        if node.op == "tile_index":
            name = self.tile_index(node.attrs["tile"])
            self.ctx.names[node.out.id] = name
            return name
        if node.op == "to" and isinstance(node.inputs[0], Value) and \
                node.inputs[0].dtype == node.out.dtype:
            name = self.ref(node.inputs[0])  # a no-op cast: no statement
            self.ctx.names[node.out.id] = name
            return name
        if node.op == "reduce":
            expr = self.reduce_expr(node)
        elif node.op == "dot":
            expr = self.dot_expr(node, None)
        else:
            args = [self.ref(i) for i in node.inputs]
            expr = op.emit(self, node, args)
            if self.interpret and op.kind == "pointwise" and node.op != "to" and \
                    node.out.dtype == torch.bfloat16:
                expr = f"({expr}).to(tl.bfloat16)"  # computed in fp32 (see coerce)
        if node.out is None:
            self.line(expr)
            return ""
        name = self.fresh(node.out.name or ("load" if node.op == "load" else "v"))
        self.line(f"{name} = {expr}")
        self.ctx.names[node.out.id] = name
        return name

    # ------------------------------------------------------------------ memory
    def emit_load(self, node: Node) -> str:
        return indexing.load(self, node)

    def emit_store(self, node: Node, args: list[str], atomic: bool = False) -> str:
        return indexing.store(self, node, args, atomic)
