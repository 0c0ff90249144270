"""Program file layout and its validating parser (numpy only; spec in docs/edge-format.md).

::

    0   8  magic b"TSHPPROG"
    8   8  u64 weights_offset   (multiple of 64, >= 32 + header_len)
    16  4  u32 format_version   (1)
    20  4  u32 flags            (0)
    24  8  u64 header_len
    32  .  header: UTF-8 JSON object (methods, values, instructions, memory plan)
    .   .  zero padding up to weights_offset
    weights_offset .. EOF: a complete safetensors blob holding every weight

``parse(buf)`` checks all of it — structure, types, every reference, shapes and dtypes
against each op's rule, weights against the blob, and that no two live arena tensors overlap —
before anything runs.

Example:
    >>> parse(b"nope")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ProgramError: <buffer>: file is 4 bytes, shorter than the 32-byte preamble
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from torchship.edge.runtime import attention as _attention  # noqa: F401  (the attention op)
from torchship.edge.runtime import bound as _binders  # noqa: F401  (register the ops and their binders)
from torchship.edge.runtime import bound_conv as _conv_binders  # noqa: F401
from torchship.edge.runtime import mbconv as _mbconv  # noqa: F401  (the fused_mbconv op)
from torchship.edge.runtime import scan as _scan  # noqa: F401  (the cumsum op)
from torchship.edge.runtime.dims import (
    DTYPES,
    ProgramError,
    check_dim,
    evaluate_shape,
    linear_form,
    nbytes,
)
from torchship.edge.runtime.registry import OPS, has_symbolic_attrs, resolve_attrs, validate_attrs
from torchship.weights.format import Header, SafetensorError, parse_header

MAGIC = b"TSHPPROG"
VERSION = 1
PREAMBLE = 32
ALIGN = 64
MAX_HEADER = 256 * 1024 * 1024
MAX_ARENA = 1 << 40
MAX_SYMBOL = 1 << 31
KINDS = ("input", "weight", "arena", "view")


@dataclass
class Value:
    """One value of a method: dtype, shape (dims), kind and storage."""

    name: str
    dtype: str
    shape: list[Any]
    kind: str
    weight: str | None = None
    offset: int = 0
    nbytes: int = 0


@dataclass
class Instr:
    """One instruction: op, value ids in/out, validated attributes, source location."""

    op: str
    inputs: list[int]
    outputs: list[int]
    attrs: dict[str, Any]
    source: str = ""
    symbolic: bool = False


@dataclass
class MethodSpec:
    """A validated method."""

    name: str
    symbols: dict[str, tuple[int, int]]
    values: list[Value]
    inputs: list[int]
    outputs: list[int]
    output_tuple: bool
    instrs: list[Instr]
    arena_size: int


@dataclass
class ProgramSpec:
    """A validated program file: methods, weights header, metadata."""

    methods: dict[str, MethodSpec]
    weights: Header
    weights_offset: int
    metadata: dict[str, str]


def _req(obj: dict[str, Any], key: str, typ: Any, where: str) -> Any:
    if key not in obj:
        raise ProgramError(f"{where}: missing field {key!r}")
    v = obj[key]
    if typ is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
    else:
        ok = isinstance(v, typ)
    if not ok:
        raise ProgramError(f"{where}: field {key!r} must be {getattr(typ, '__name__', typ)}, got {type(v).__name__}")
    return v


def parse(buf: Any, *, name: str = "<buffer>") -> ProgramSpec:
    """Parse and validate a whole program file held in ``buf`` (bytes or mmap).

    Example:
        >>> parse(b"TSHPPROG" + bytes(24), name="x.tsp")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ProgramError: x.tsp: format version 0 is not supported (this runtime reads 1)
    """
    view = memoryview(buf)
    total = len(view)
    if total < PREAMBLE:
        raise ProgramError(f"{name}: file is {total} bytes, shorter than the {PREAMBLE}-byte preamble")
    if bytes(view[:8]) != MAGIC:
        raise ProgramError(f"{name}: bad magic {bytes(view[:8])!r} (expected {MAGIC!r}); not a torchship program")
    weights_offset, version, flags, header_len = struct.unpack_from("<QIIQ", view, 8)
    if version != VERSION:
        raise ProgramError(f"{name}: format version {version} is not supported (this runtime reads {VERSION})")
    if flags != 0:
        raise ProgramError(f"{name}: unknown flags {flags:#x} (expected 0)")
    if header_len > MAX_HEADER or PREAMBLE + header_len > weights_offset:
        raise ProgramError(f"{name}: header length {header_len} does not fit before weights_offset {weights_offset}")
    if weights_offset % ALIGN or weights_offset > total:
        raise ProgramError(
            f"{name}: weights_offset {weights_offset} must be a multiple of {ALIGN} inside the file ({total} bytes)"
        )
    try:
        header = json.loads(bytes(view[PREAMBLE : PREAMBLE + header_len]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProgramError(f"{name}: program header is not valid UTF-8 JSON: {exc}") from None
    try:
        weights = parse_header(buf, name=f"{name} (weights)", base=weights_offset)
    except SafetensorError as exc:
        raise ProgramError(f"{name}: weights section: {exc}") from None
    if not isinstance(header, dict):
        raise ProgramError(f"{name}: program header must be a JSON object")
    if header.get("format") != "torchship.edge.program":
        raise ProgramError(f"{name}: header field 'format' must be 'torchship.edge.program'")
    meta = header.get("metadata", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ProgramError(f"{name}: 'metadata' must map strings to strings")
    methods = _req(header, "methods", dict, name)
    if not methods:
        raise ProgramError(f"{name}: program has no methods")
    specs = {m: _parse_method(m, body, weights, f"{name}: method {m!r}") for m, body in methods.items()}
    return ProgramSpec(specs, weights, weights_offset, dict(meta))


def _parse_method(mname: str, body: Any, weights: Header, where: str) -> MethodSpec:
    if not isinstance(body, dict):
        raise ProgramError(f"{where}: must be an object")
    symbols: dict[str, tuple[int, int]] = {}
    for sym, rng in _req(body, "symbols", dict, where).items():
        w = f"{where}: symbol {sym!r}"
        if not isinstance(rng, dict):
            raise ProgramError(f"{w}: must be {{'min': int, 'max': int}}")
        lo, hi = _req(rng, "min", int, w), _req(rng, "max", int, w)
        if not 0 <= lo <= hi <= MAX_SYMBOL:
            raise ProgramError(f"{w}: range [{lo}, {hi}] must satisfy 0 <= min <= max <= {MAX_SYMBOL}")
        symbols[sym] = (lo, hi)
    arena_size = _req(body, "arena_size", int, where)
    if not 0 <= arena_size <= MAX_ARENA:
        raise ProgramError(f"{where}: arena_size {arena_size} out of range [0, {MAX_ARENA}]")
    upper = {s: hi for s, (_, hi) in symbols.items()}
    values: list[Value] = []
    for i, v in enumerate(_req(body, "values", list, where)):
        values.append(_parse_value(v, i, symbols, upper, arena_size, weights, f"{where}: value {i}"))
    n = len(values)

    def ref(x: Any, w: str) -> int:
        if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x < n:
            raise ProgramError(f"{w}: value id {x!r} out of range [0, {n})")
        return x

    inputs = [ref(x, f"{where}: inputs") for x in _req(body, "inputs", list, where)]
    outputs = [ref(x, f"{where}: outputs") for x in _req(body, "outputs", list, where)]
    if not outputs:
        raise ProgramError(f"{where}: method has no outputs")
    output_tuple = _req(body, "output_tuple", bool, where)
    if len(outputs) != 1 and not output_tuple:
        raise ProgramError(f"{where}: several outputs need output_tuple true")
    bound: set[str] = set()
    defined = [False] * n
    for pos, vid in enumerate(inputs):
        v = values[vid]
        if v.kind != "input" or defined[vid]:
            raise ProgramError(f"{where}: input {pos} (value {vid}) must be a distinct value of kind 'input'")
        defined[vid] = True
        for d in v.shape:
            form = None if isinstance(d, int) else linear_form(d)
            if form is not None:
                bound.add(form[0])
            elif not isinstance(d, int):
                raise ProgramError(f"{where}: input {pos} dims must be integers, bare symbols or a·symbol + c, got {d!r}")
    unbound = set(symbols) - bound
    if unbound:
        raise ProgramError(f"{where}: symbols {sorted(unbound)} are not bound by any input dimension")
    for vid, v in enumerate(values):
        if v.kind == "input" and not defined[vid]:
            raise ProgramError(f"{where}: value {vid} has kind 'input' but is not a method input")
        if v.kind == "weight":
            defined[vid] = True
    instrs: list[Instr] = []
    for k, raw in enumerate(_req(body, "instructions", list, where)):
        w = f"{where}: instruction {k}"
        if not isinstance(raw, dict):
            raise ProgramError(f"{w}: must be an object")
        opname = _req(raw, "op", str, w)
        op = OPS.get(opname)
        if op is None:
            raise ProgramError(f"{w}: unknown op {opname!r} (this runtime knows {len(OPS)} ops, see docs/edge-ops.md)")
        w = f"{w} ({opname})"
        ins = [ref(x, w) for x in _req(raw, "inputs", list, w)]
        outs = [ref(x, w) for x in _req(raw, "outputs", list, w)]
        if not op.min_inputs <= len(ins) <= op.max_inputs or len(outs) != op.n_outputs:
            raise ProgramError(f"{w}: takes {op.min_inputs}..{op.max_inputs} inputs and {op.n_outputs} outputs, got {len(ins)}/{len(outs)}")
        for x in ins:
            if not defined[x]:
                raise ProgramError(f"{w}: reads value {x} before it is defined")
        for x in outs:
            want = "view" if op.alias else "arena"
            if defined[x] or values[x].kind != want:
                raise ProgramError(f"{w}: output value {x} must be a not-yet-defined value of kind {want!r}")
            defined[x] = True
        attrs = validate_attrs(op, raw.get("attrs", {}), symbols, w)
        src = raw.get("source", "")
        instrs.append(Instr(opname, ins, outs, attrs, src if isinstance(src, str) else "", has_symbolic_attrs(op, attrs)))
    for vid in outputs:
        if not defined[vid]:
            raise ProgramError(f"{where}: output value {vid} is never defined")
    for vid, v in enumerate(values):
        if not defined[vid]:
            raise ProgramError(f"{where}: value {vid} ({v.name}) is never defined")
    spec = MethodSpec(mname, symbols, values, inputs, outputs, output_tuple, instrs, arena_size)
    check_shapes(spec, upper, where)
    check_overlap(spec, where)
    return spec


def _parse_value(
    v: Any, i: int, symbols: dict[str, Any], upper: dict[str, int], arena: int, weights: Header, where: str
) -> Value:
    if not isinstance(v, dict):
        raise ProgramError(f"{where}: must be an object")
    dtype = _req(v, "dtype", str, where)
    if dtype not in DTYPES:
        raise ProgramError(f"{where}: dtype {dtype!r} not supported (expected one of {sorted(DTYPES)})")
    shape = _req(v, "shape", list, where)
    if len(shape) > 32:
        raise ProgramError(f"{where}: rank {len(shape)} exceeds 32")
    for d in shape:
        if type(d) is not int or not 0 <= d < 1 << 62:
            check_dim(d, symbols, where)
    kind = _req(v, "kind", str, where)
    if kind not in KINDS:
        raise ProgramError(f"{where}: kind {kind!r} must be one of {KINDS}")
    val = Value(str(v.get("name", f"v{i}")), dtype, shape, kind)
    if kind == "weight":
        val.weight = _req(v, "weight", str, where)
        info = weights.tensors.get(val.weight)
        if info is None:
            raise ProgramError(f"{where}: weight {val.weight!r} is not in the weights section")
        if info.dtype != dtype or list(info.shape) != shape:
            raise ProgramError(
                f"{where}: weight {val.weight!r} is {info.dtype} {list(info.shape)} in the weights section, "
                f"but the program declares {dtype} {shape}"
            )
    elif kind in ("input", "arena"):
        val.offset = _req(v, "offset", int, where)
        val.nbytes = _req(v, "nbytes", int, where)
        need = nbytes(dtype, evaluate_shape(shape, upper))
        if val.offset < 0 or val.offset % ALIGN or val.nbytes < need or val.offset + val.nbytes > arena:
            raise ProgramError(
                f"{where}: arena slot [{val.offset}, {val.offset + val.nbytes}) must be {ALIGN}-aligned, hold "
                f"{need} bytes (upper bound of {dtype} {shape}) and lie inside the arena of {arena} bytes"
            )
    return val


def check_shapes(spec: MethodSpec, env: dict[str, int], where: str) -> None:
    """Check every instruction's declared output shapes/dtypes against the op rule for ``env``.

    Example:
        >>> # called by parse() with each symbol at its upper bound, and by the runtime per call
    """
    shapes = [None if v.kind == "weight" else evaluate_shape(v.shape, env) for v in spec.values]
    for vid, v in enumerate(spec.values):
        if v.kind == "weight":
            shapes[vid] = tuple(v.shape)
    for k, ins in enumerate(spec.instrs):
        op = OPS[ins.op]
        try:
            attrs = resolve_attrs(op, ins.attrs, env) if ins.symbolic else ins.attrs
            got = op.infer([shapes[i] for i in ins.inputs], [spec.values[i].dtype for i in ins.inputs], attrs)
        except ProgramError as exc:
            raise ProgramError(f"{where}: instruction {k} ({ins.op}{_src(ins)}): {exc}") from None
        for vid, (shape, dtype) in zip(ins.outputs, got):
            if shapes[vid] != shape or spec.values[vid].dtype != dtype:
                raise ProgramError(
                    f"{where}: instruction {k} ({ins.op}{_src(ins)}) produces {dtype} {list(shape)} but value "
                    f"{vid} is declared {spec.values[vid].dtype} {list(shapes[vid])}"
                )


def _src(ins: Instr) -> str:
    return f" at {ins.source}" if ins.source else ""


def lifetimes(spec: MethodSpec) -> dict[int, tuple[int, int]]:
    """Storage lifetime [first, last] instruction index of each arena/input value (views extend it).

    Inputs start at -1; method outputs live to the end.

    Example:
        >>> # {value id: (defined at, last read at)}
    """
    root = list(range(len(spec.values)))
    life: dict[int, list[int]] = {}
    end = len(spec.instrs)
    for vid in spec.inputs:
        life[vid] = [-1, -1]
    for k, ins in enumerate(spec.instrs):
        for x in ins.inputs:
            r = root[x]
            if r in life:
                life[r][1] = k
        op = OPS[ins.op]
        for o in ins.outputs:
            if op.alias:
                root[o] = root[ins.inputs[0]]
            else:
                life[o] = [k, k]
    for vid in spec.outputs:
        r = root[vid]
        if r in life:
            life[r][1] = end
    return {v: (a, b) for v, (a, b) in life.items()}


def check_overlap(spec: MethodSpec, where: str) -> None:
    """Fail if two arena values that are live at the same time share bytes.

    Example:
        >>> # called by parse(); a planner bug or a hostile file cannot alias live tensors
    """
    life = lifetimes(spec)
    order = sorted(life, key=lambda v: life[v][0])
    active: list[int] = []
    for vid in order:
        start = life[vid][0]
        active = [a for a in active if life[a][1] >= start]
        v = spec.values[vid]
        for a in active:
            u = spec.values[a]
            if v.nbytes and u.nbytes and v.offset < u.offset + u.nbytes and u.offset < v.offset + v.nbytes:
                raise ProgramError(
                    f"{where}: values {a} ({u.name}) and {vid} ({v.name}) are live at the same time but "
                    f"share arena bytes [{max(u.offset, v.offset)}, {min(u.offset + u.nbytes, v.offset + v.nbytes)})"
                )
        active.append(vid)
