"""Address code for loads, stores and atomic adds: one helper per indexing strategy.

- ``pointer``: ``base + sum(index_d * stride_d)`` with a broadcast mask (always available).
- ``block_ptr``: ``tl.make_block_ptr`` + ``boundary_check`` (Triton versions that still have
  block pointers; removed in Triton 3.7+, where the ConfigSpace does not offer it).
- ``tensor_descriptor``: ``tl.make_tensor_descriptor`` (TMA on Hopper; the interpreter emulates
  it) for tensors whose last stride is 1 and whose other strides/base are 16-byte aligned.

A slice ``a:b:s`` (an index entry with a ``start``/``step``) adds ``a * stride`` to the base
and multiplies the stride by ``s``.
Accesses a strategy cannot express (gathers, scalar-only loads, ``None`` entries in stores,
slices for descriptors)
use pointer code; the generated source says so in a comment.

Example:
    >>> pointer_terms.__name__
    'pointer_terms'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from torchship.kernels.frontend.analysis import walk_nodes
from torchship.kernels.ir import Node, Value
from torchship.kernels.ops.memory import Index, index_shape


def pointer_terms(cg: Any, node: Node) -> tuple[str, str | None, int]:
    """(pointer expression, mask expression or None, rank) of an access."""
    ref = node.attrs["tensor"]
    index: list[Index] = node.attrs["index"]
    shape = index_shape(index)
    rank = len(shape)
    terms = [ref.ptr.name]
    masks: list[str] = []
    pos = 0
    group = (0, 0)  # (first position, rank) of the last gather's dims
    for e in index:
        if e.kind == "none":
            pos += 1
            continue
        stride = cg.ref(cg.b_stride(ref, e.axis))
        wide = ".to(tl.int64)" if ref.big else ""  # 2**31+ elements: 64-bit offsets
        if e.kind == "scalar":
            s = cg.ref(e.value)
            terms.append(f"{s}{wide if isinstance(e.value, Value) else ''} * {stride}")
            continue
        if e.kind == "gather":  # an integer block of any rank: its dims sit at pos, pos+1, ..
            g = e.value
            if not e.paired:  # (a paired block broadcasts into the first one's dims)
                group = (pos, len(e.dims()))
                for k, d in enumerate(e.dims()):
                    _, m, _ = cg.dim_info(d)
                    if m is not None:
                        masks.append(cg.expand(m, pos + k, rank))
                pos += group[1]
            idx = cg.ref(g) + wide
            if g.ndim < rank:
                end = group[0] + group[1]  # right-aligned in the group, as broadcasting does
                parts = ["None"] * rank
                parts[end - g.ndim:end] = [":"] * g.ndim
                idx = f"{idx}[{', '.join(parts)}]"
            terms.append(f"{idx} * {stride}")
            continue
        d = shape[pos]
        idx, m, _ = cg.dim_info(d)
        step = f" * {e.step}" if e.step is not None else ""  # a slice a:b:step
        terms.append(f"{cg.expand(idx, pos, rank)}{wide} * {stride}{step}")
        if e.start is not None:  # a slice a:b: its block starts at a
            terms.append(f"{cg.ref(e.start)}{wide} * {stride}")
        if e.clip is not None:  # a start computed on the device: stop at the tensor's end
            masks.append(cg.expand(f"({idx}{step} + {cg.ref(e.start)} < {cg.ref(e.clip)})", pos,
                                   rank))
        if m is not None:
            masks.append(cg.expand(m, pos, rank))
        pos += 1
    return " + ".join(terms), (" & ".join(masks) if masks else None), rank


def _extra_mask(cg: Any, node: Node, rank: int) -> str | None:
    """The access's ``ts.load/ts.store(extra_mask=)`` block, lined up with its rank."""
    pos = 0 if node.op == "load" else 1  # a store's (or atomic add's) value comes first
    if len(node.inputs) <= pos:
        return None
    mask = node.inputs[pos]
    expr = cg.ref(mask)
    if mask.ndim < rank:
        expr = f"{expr}[{', '.join(['None'] * (rank - mask.ndim) + [':'] * mask.ndim)}]"
    return expr


def _and(mask: str | None, extra: str | None) -> str | None:
    return mask if extra is None else extra if mask is None else f"({mask}) & ({extra})"


def _block_ptr_ok(node: Node) -> bool:
    index: list[Index] = node.attrs["index"]
    if len(node.inputs) > (node.op != "load"):
        return False  # an extra mask: pointer code
    kinds = {e.kind for e in index}
    if "gather" in kinds or not (kinds & {"tile", "full"}) or any(
            e.clip is not None or e.step is not None for e in index):
        return False
    return not (node.op != "load" and "none" in kinds)


def _block_ptr(cg: Any, node: Node) -> tuple[str, str, list[str]]:
    """(block pointer expr, boundary_check tuple, view spec for None entries)."""
    ref = node.attrs["tensor"]
    index: list[Index] = node.attrs["index"]
    base = [ref.ptr.name]
    shape, strides, offsets, blocks, spec = [], [], [], [], []
    for e in index:
        if e.kind == "none":
            spec.append("None")
            continue
        stride = cg.ref(cg.b_stride(ref, e.axis))
        if e.kind == "scalar":
            base.append(f"{cg.ref(e.value)} * {stride}")
            continue
        d = e.tile.dim if e.kind == "tile" else e.full
        idx, _, blk = cg.dim_info(d)
        if e.kind == "tile":
            extent, begin = _tile_bounds(cg, e)
        else:
            extent = cg.ref(e.full.find().size)
            begin = cg.dim_offset(e.full)
            if e.start is not None:  # a slice a:b: the block pointer's tensor starts at a
                base.append(f"{cg.ref(e.start)} * {stride}")
        shape.append(extent)
        strides.append(stride)
        offsets.append(begin)
        blocks.append(blk)
        spec.append(":")
    n = len(shape)
    order = tuple(range(n - 1, -1, -1))
    bp = (f"tl.make_block_ptr({' + '.join(base)}, shape={_tup(shape)}, "
          f"strides={_tup(strides)}, offsets={_tup(offsets)}, "
          f"block_shape={_tup(blocks)}, order={order})")
    check = _tup([str(i) for i in range(n)])
    return bp, check, spec


def _tile_bounds(cg: Any, e: Index) -> tuple[str, str]:
    """(extent, block start) of a tile entry for a block pointer or descriptor."""
    extent = cg.ref(e.tile.end)
    begin = cg.tile_vars[id(e.tile)]["begin"]
    if any(isinstance(v, Value) and v.dtype == torch.int64 for v in (e.tile.begin, e.tile.end)):
        # bounds read from an int64 tensor (offsets[g]): these take 32-bit offsets and shapes
        extent, begin = f"tl.cast({extent}, tl.int32)", f"tl.cast({begin}, tl.int32)"
    return extent, begin


def _note_fallback(cg: Any, node: Node) -> None:
    if cg.indexing != "pointer":
        cg.line(f"# {node.attrs['tensor'].name}: {cg.indexing} does not apply to this access "
                "(gather, scalar, slice start, unaligned or 3-D): pointer code")


def _tup(items: list[str]) -> str:
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _eviction_hint(cg: Any, node: Node) -> str:
    """The load's ``eviction_policy`` argument under ``Config.load_eviction``: ``stream`` and
    ``reuse`` mark a tensor's last read in program order ``evict_first`` (its data is not read
    again) and, for ``reuse``, its earlier reads ``evict_last`` (a two-pass kernel's second pass
    finds the rows in L2)."""
    mode = cg.config.load_eviction
    if mode in ("stream", "reuse"):
        last = getattr(cg, "last_reads", None)
        if last is None:
            reads = {n.attrs["tensor"].name: id(n) for n, _ in walk_nodes(cg.launch.body)
                     if n.op == "load"}
            last = cg.last_reads = set(reads.values())
        mode = "first" if id(node) in last else ("last" if mode == "reuse" else "")
    return f", eviction_policy=\"evict_{mode}\"" if mode else ""


def load(cg: Any, node: Node) -> str:
    """Triton expression loading the node's block."""
    other = _other(node)
    # block pointers of a bool tensor hold int8 elements (pointers convert)
    as_bool = " != 0" if node.attrs["tensor"].dtype == torch.bool else ""
    hint = _eviction_hint(cg, node)
    if cg.indexing == "block_ptr" and _block_ptr_ok(node):
        bp, check, spec = _block_ptr(cg, node)
        expr = f"tl.load({bp}, boundary_check={check}, padding_option=\"zero\"{hint})"
        if "None" in spec:
            expr = f"{expr}[{', '.join(spec)}]"
        return f"({expr}{as_bool})" if as_bool else expr
    if cg.indexing == "tensor_descriptor" and _tdesc_ok(cg, node):
        return _tdesc_load(cg, node)
    _note_fallback(cg, node)
    ptr, mask, rank = pointer_terms(cg, node)
    mask = _and(mask, _extra_mask(cg, node, rank))
    if mask is None:
        return f"tl.load({ptr}{hint})"
    return f"tl.load({ptr}, mask={mask}, other={other}{hint})"


def _other(node: Node) -> str:
    """The value a masked load reads at its dropped lanes (``ts.load(other=)``, else 0)."""
    other = node.attrs.get("other", 0)
    if not node.out.dtype.is_floating_point:
        return str(int(other))
    f = float(other)
    return repr(f) if math.isfinite(f) else f'float("{f}")'


def _value_for(cg: Any, node: Node, args: list[str], target_rank: int) -> str:
    value = node.inputs[0]
    ref = node.attrs["tensor"]
    # a Python number becomes a typed scalar (tl.broadcast_to/atomic_add need a tensor)
    expr = cg.coerce(value, args[0], ref.dtype, force=node.op == "atomic_add")
    if isinstance(value, Value) and 0 < value.ndim < target_rank:
        spec = ["None"] * (target_rank - value.ndim) + [":"] * value.ndim
        expr = f"{expr}[{', '.join(spec)}]"
    return expr


def store(cg: Any, node: Node, args: list[str], atomic: bool) -> str:
    """Triton statement storing (or atomically adding) the node's value."""
    shape = index_shape(node.attrs["index"])
    rank = len(shape)
    value = _value_for(cg, node, args, rank)
    # block pointers of a bool tensor hold int8 (pointers convert)
    as_int8 = f"({value}).to(tl.int8)" if node.attrs["tensor"].dtype == torch.bool else value
    if not atomic and cg.indexing == "block_ptr" and _block_ptr_ok(node):
        bp, check, _ = _block_ptr(cg, node)
        full = "[" + ", ".join(cg.block(d) for d in shape) + "]"
        return f"tl.store({bp}, tl.broadcast_to({as_int8}, {full}), boundary_check={check})"
    if not atomic and cg.indexing == "tensor_descriptor" and _tdesc_ok(cg, node):
        return _tdesc_store(cg, node, value)
    if not atomic:
        _note_fallback(cg, node)
    ptr, mask, _ = pointer_terms(cg, node)
    mask = _and(mask, _extra_mask(cg, node, rank))
    if atomic:
        if rank:
            full = "[" + ", ".join(cg.block(d) for d in shape) + "]"
            value = f"tl.broadcast_to({value}, {full})"
            if cg.interpret:
                # Triton 3.6's interpreter reads the pointer, value and mask buffers of an
                # atomic as dense arrays: a broadcast (stride-0) one gives wrong lanes.
                # An elementwise op with a full block makes each a fresh dense array
                every = f"tl.full({full}, 1, tl.int1)"
                ptr = f"({ptr}) + tl.zeros({full}, tl.int32)"
                value = f"tl.where({every}, {value}, {value})"
                mask = mask and f"({mask}) & {every}"
        m = f", mask={mask}" if mask else ""
        return f"tl.atomic_add({ptr}, {value}{m}, sem=\"relaxed\")"
    if mask is None:
        return f"tl.store({ptr}, {value})"
    return f"tl.store({ptr}, {value}, mask={mask})"


# ------------------------------------------------------------------ tensor descriptors
def _tdesc_ok(cg: Any, node: Node) -> bool:
    ref = node.attrs["tensor"]
    index: list[Index] = node.attrs["index"]
    if len(node.inputs) > (node.op != "load"):
        return False  # an extra mask: pointer code
    if not getattr(ref, "tdesc_ok", False) or ref.dtype == torch.bool:
        return False  # bool: int1 has no byte size for a descriptor (the interpreter refuses)
    if any(e.kind in ("gather", "scalar") or e.start is not None or e.step is not None
           for e in index):
        return False  # (a slice a:b moves the base: its alignment is unknown; a:b:s strides)
    if node.op != "load" and any(e.kind == "none" for e in index):
        return False
    real = [e for e in index if e.kind != "none"]
    if not real or real[-1].axis != ref.ndim - 1:
        return False
    if len(real) > 2:
        return False  # 3-D descriptors crash Triton 3.6's pipeliner (seen on H100)
    last = real[-1]
    d = last.tile.dim if last.kind == "tile" else last.full
    width = _block_width(cg, d)
    if width is None or width * ref.dtype.itemsize < 16:
        return False
    # the block's start along the last dim must be 16-byte aligned (the interpreter asserts
    # it): a tile loop starting at 0, or at another such tile's begin (split-k), is
    return last.kind == "full" or _aligned_start(cg, last.tile.begin, ref.dtype.itemsize)


def _block_width(cg: Any, d: Any) -> int | None:
    blk = cg.dim_info(d)[2]
    try:
        return int(cg.constexprs.get(blk, blk))
    except ValueError:
        return None


def _aligned_start(cg: Any, begin: Any, itemsize: int) -> bool:
    if isinstance(begin, int):
        return begin * itemsize % 16 == 0
    node = begin.node if isinstance(begin, Value) else None
    if node is None or node.op != "tile_attr" or node.attrs["attr"] != "begin":
        return False  # a start read on the device (offsets[g]): alignment unknown
    tile = node.attrs["tile"]
    width = _block_width(cg, tile.dim)
    return width is not None and width * itemsize % 16 == 0 and \
        _aligned_start(cg, tile.begin, itemsize)


def _tdesc(cg: Any, node: Node) -> tuple[str, str, list[str]]:
    ref = node.attrs["tensor"]
    index: list[Index] = node.attrs["index"]
    shape, strides, offsets, blocks, spec = [], [], [], [], []
    for e in index:
        if e.kind == "none":
            spec.append("None")
            continue
        stride = cg.ref(cg.b_stride(ref, e.axis))
        d = e.tile.dim if e.kind == "tile" else e.full
        idx, _, blk = cg.dim_info(d)
        if e.kind == "tile":
            extent, begin = _tile_bounds(cg, e)
            shape.append(extent)
            offsets.append(begin)
        else:
            shape.append(cg.ref(e.full.find().size))
            offsets.append(cg.dim_offset(e.full))
        strides.append(stride if e.axis != ref.ndim - 1 else "1")
        blocks.append(blk)
        spec.append(":")
    desc = _host_desc(cg, ref, shape, strides, blocks)
    if desc is None:
        desc = (f"tl.make_tensor_descriptor({ref.ptr.name}, shape=[{', '.join(shape)}], "
                f"strides=[{', '.join(strides)}], block_shape=[{', '.join(blocks)}])")
        # created once per program when it depends only on kernel arguments (not per iteration)
        desc = cg.hoist(desc, f"{ref.ptr.name}_desc") if hasattr(cg, "hoist") else desc
    return desc, f"[{', '.join(offsets)}]", spec


@dataclass(eq=False)
class HostDescriptor:
    """A kernel parameter holding a tensor descriptor that the launcher builds on the host
    (``_TD(tensor, shape, strides, block_shape)``): the TMA descriptor then comes with the
    launch, where a ``tl.make_tensor_descriptor`` in the kernel is written to global memory
    and fenced by every program (on an H100, bf16 matmul 4096^3 with 128x256 tiles: 184.6 µs
    with host descriptors, 195.2 µs with device-made ones)."""

    name: str
    getter: str
    value: None = None
    descriptor: bool = True  # what the direct launch path keys on (its base's alignment)


def _host_desc(cg: Any, ref: Any, shape: list[str], strides: list[str],
               blocks: list[str]) -> str | None:
    """The name of a host-built descriptor parameter for this access, when its shape and
    strides are kernel arguments (the launcher knows them) and its block sizes constants;
    else None (the kernel makes the descriptor)."""
    descs = getattr(cg, "host_descs", None)
    if descs is None:
        return None
    getters = {p.name: p.getter for p in cg.launch.args}

    def host(expr: str) -> str | None:
        if expr.isdigit():
            return expr
        if expr in getters:
            return getters[expr]
        value = cg.constexprs.get(expr, "")
        return value if value.isdigit() else None

    parts = [[host(x) for x in xs] for xs in (shape, strides, blocks)]
    if any(x is None for xs in parts for x in xs) or ref.ptr.name not in getters:
        return None
    getter = (f"_TD({ref.ptr.getter}, [{', '.join(parts[0])}], [{', '.join(parts[1])}], "
              f"[{', '.join(parts[2])}])")
    for d in descs:
        if d.getter == getter:
            return d.name
    descs.append(HostDescriptor(cg.fresh(f"{ref.ptr.name}_desc"), getter))
    return descs[-1].name


def _tdesc_load(cg: Any, node: Node) -> str:
    desc, offs, spec = _tdesc(cg, node)
    expr = f"{desc}.load({offs})"
    if "None" in spec:
        expr = f"{expr}[{', '.join(spec)}]"
    return expr


def _tdesc_store(cg: Any, node: Node, value: str) -> str:
    desc, offs, _ = _tdesc(cg, node)
    shape = index_shape(node.attrs["index"])
    full = "[" + ", ".join(cg.block(d) for d in shape) + "]"
    return f"{desc}.store({offs}, tl.broadcast_to({value}, {full}))"
