"""Load a program file and run its methods with numpy (no torch anywhere).

A loaded method owns one arena, so one ``Method`` must not run from two threads at once (load
the program once per thread instead; the weights are shared through the page cache).

The file is memory-mapped; weights become read-only numpy views of the map (zero copy); each
method gets one preallocated arena, and every value is a view at its planned offset. For each
set of symbol values (dynamic dims) the instructions are bound once into zero-argument steps
(arena views, weight layouts, attributes and scratch buffers resolved; see
``registry.bind_step``) and cached, so a call is a tight loop of step calls.

Example:
    >>> prog = load("model.tsp")  # doctest: +SKIP
    >>> prog.run(x)  # doctest: +SKIP
    >>> prog.method("encode")(ids, mask)  # doctest: +SKIP
"""

from __future__ import annotations

import mmap
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from torchship.edge.runtime.bound import TempRegion, binding, scratch_bytes
from torchship.edge.runtime.dims import (
    DTYPES,
    ProgramError,
    evaluate_shape,
    nbytes,
    solve_input_dim,
)
from torchship.edge.runtime.format import MethodSpec, ProgramSpec, check_shapes, parse
from torchship.edge.runtime.registry import OPS, Step, bind_step, resolve_attrs

_CACHE = 16
_ERRORS = (ProgramError, ValueError, TypeError, IndexError, ArithmeticError, MemoryError)
# bound steps, the instruction of each step, input arena views, output arena views
_Bound = tuple[list[Step], list[Any], list[np.ndarray], list[np.ndarray]]


def _at(instr: Any) -> str:
    return f" at {instr.source}" if instr.source else ""


class Method:
    """One runnable method: validated spec, arena, weights, cached bound steps.

    Example:
        >>> out = load("model.tsp").method("forward")(x)  # doctest: +SKIP
    """

    def __init__(self, spec: MethodSpec, weights: dict[str, np.ndarray], where: str) -> None:
        self.spec = spec
        self.where = where
        self.arena = np.empty(spec.arena_size + 64, np.uint8)
        base = (-self.arena.ctypes.data) % 64  # 64-byte aligned base
        self._buf = self.arena[base : base + spec.arena_size]
        self._weights = {vid: weights[v.weight] for vid, v in enumerate(spec.values) if v.weight is not None}
        self._bound: OrderedDict[tuple[int, ...], _Bound] = OrderedDict()
        # static methods: each input's (shape, dtype); a call whose inputs match exactly skips
        # the symbol binding and cache lookup and runs the one bound step list directly
        self._fixed = None if spec.symbols else [(tuple(spec.values[v].shape), DTYPES[spec.values[v].dtype]) for v in spec.inputs]
        self._static: _Bound | None = None
        self.symbols = list(spec.symbols)
        self._scratch = 0  # largest binder scratch of one binding (bound.scratch)

    @property
    def name(self) -> str:
        """The method name.

        Example:
            >>> load("model.tsp").method("forward").name  # doctest: +SKIP
            'forward'
        """
        return self.spec.name

    def _bind_symbols(self, arrays: list[np.ndarray]) -> dict[str, int]:
        env: dict[str, int] = {}
        spec = self.spec
        for pos, (vid, x) in enumerate(zip(spec.inputs, arrays)):
            v = spec.values[vid]
            if x.ndim != len(v.shape):
                raise ProgramError(f"{self.where}: input {pos} ({v.name}) must have rank {len(v.shape)} {v.shape}, got shape {list(x.shape)}")
            for d, (want, got) in enumerate(zip(v.shape, x.shape)):
                if not isinstance(want, int):
                    solved = solve_input_dim(want, got)
                    if solved is None:
                        raise ProgramError(f"{self.where}: input {pos} ({v.name}) dim {d} = {got} is not of the exported form {want}")
                    sym, value = solved
                    lo, hi = spec.symbols[sym]
                    if env.setdefault(sym, value) != value:
                        raise ProgramError(f"{self.where}: input {pos} ({v.name}) dim {d} is {got} but symbol {sym!r} is already {env[sym]}")
                    if not lo <= value <= hi:
                        raise ProgramError(
                            f"{self.where}: input {pos} ({v.name}) dim {d} = {got} is outside the planned range "
                            f"[{lo}, {hi}] of {sym!r}{'' if want == sym else f' (dim = {want})'}; re-export with a larger max for that dynamic dim"
                        )
                elif want != got:
                    raise ProgramError(f"{self.where}: input {pos} ({v.name}) dim {d} must be {want}, got {got}")
        return env

    def _bind(self, env: dict[str, int]) -> _Bound:
        key = tuple(env[s] for s in self.symbols)
        hit = self._bound.get(key)
        if hit is not None:
            self._bound.move_to_end(key)
            return hit
        spec = self.spec
        if self.symbols:
            check_shapes(spec, env, self.where)
        arrays: list[np.ndarray | None] = [None] * len(spec.values)
        for vid, v in enumerate(spec.values):
            if v.kind == "weight":
                arrays[vid] = self._weights[vid]
            elif v.kind in ("input", "arena"):
                shape = evaluate_shape(v.shape, env)
                arrays[vid] = np.ndarray(shape, DTYPES[v.dtype], self._buf, v.offset)
        steps: list[Step] = []
        instrs: list[Any] = []
        measure = TempRegion(None)  # first pass: each step's temp need (the steps are dropped)
        self._bind_steps(spec, env, list(arrays), [], [], measure)
        region = TempRegion(measure.peak)
        before = scratch_bytes()
        self._bind_steps(spec, env, arrays, steps, instrs, region)
        self._scratch = max(self._scratch, scratch_bytes() - before + region.nbytes)
        bound = (steps, instrs, [arrays[v] for v in spec.inputs], [arrays[v] for v in spec.outputs])
        self._bound[key] = bound  # type: ignore[assignment]
        if len(self._bound) > _CACHE:
            self._bound.popitem(last=False)
        return bound  # type: ignore[return-value]

    def _bind_steps(self, spec: MethodSpec, env: dict[str, int], arrays: list[Any], steps: list[Step], instrs: list[Any], region: TempRegion) -> None:
        binding(region)  # steps of this binding carve their temporaries from one region
        try:
            for ins in spec.instrs:
                op = OPS[ins.op]
                attrs = resolve_attrs(op, ins.attrs, env) if ins.symbolic else ins.attrs
                if op.alias:
                    out = spec.values[ins.outputs[0]]
                    arrays[ins.outputs[0]] = arrays[ins.inputs[0]].reshape(evaluate_shape(out.shape, env))
                    continue
                region.next_step()
                try:
                    steps.append(bind_step(op, [arrays[i] for i in ins.inputs], [arrays[o] for o in ins.outputs], attrs))  # type: ignore[misc]
                except (ProgramError, ValueError, TypeError, IndexError, ArithmeticError, MemoryError) as exc:
                    raise ProgramError(f"{self.where}: {ins.op}{_at(ins)}: {exc}") from None
                instrs.append(ins)
        finally:
            binding(None)

    def __call__(self, *inputs: Any) -> Any:
        """Run the method on numpy arrays; returns an array, or a tuple for several outputs.

        Example:
            >>> load("mlp.tsp").method("forward")(np.zeros((4, 64), np.float32)).shape  # doctest: +SKIP
            (4, 10)
        """
        bound = self._static
        if bound is not None and len(inputs) == len(bound[2]):
            for x, (shape, dtype) in zip(inputs, self._fixed):  # type: ignore[arg-type]
                if type(x) is not np.ndarray or x.shape != shape or x.dtype != dtype:
                    bound = None
                    break
        if bound is None:
            bound = self._checked(inputs)
        steps, instrs, in_arrays, out_arrays = bound
        for dst, src in zip(in_arrays, inputs):
            np.copyto(dst, src)
        try:
            # IEEE results without numpy's warnings, as torch gives them: log(0) = -inf, 0/0 = nan
            # in a branch torch.where then drops (T5's relative position buckets take log(0))
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                for step in steps:  # no step counter on the hot path (~25 ns a step)
                    step()
        except _ERRORS as exc:
            instr = instrs[self._failing_step(bound, inputs)]
            raise ProgramError(f"{self.where}: {instr.op}{_at(instr)}: {exc}") from None
        if not self.spec.output_tuple:
            return out_arrays[0].copy()
        return tuple(o.copy() for o in out_arrays)

    @staticmethod
    def _failing_step(bound: _Bound, inputs: tuple[Any, ...]) -> int:
        """Index of the step that raised: the steps are deterministic functions of the inputs
        (and the arena they fill from them), so running them again from the start with a
        counter fails at the same step (error path only)."""
        steps, _, in_arrays, _ = bound
        for dst, src in zip(in_arrays, inputs):
            np.copyto(dst, src)
        for k, step in enumerate(steps):
            try:
                step()
            except _ERRORS:
                return k
        return len(steps) - 1  # pragma: no cover - did not fail again

    def _checked(self, inputs: tuple[Any, ...]) -> _Bound:
        """Validate the inputs (count, dtype, shape against the symbols) and get their binding."""
        spec = self.spec
        if len(inputs) != len(spec.inputs):
            raise ProgramError(f"{self.where}: takes {len(spec.inputs)} inputs, got {len(inputs)}")
        arrays = []
        for pos, (vid, x) in enumerate(zip(spec.inputs, inputs)):
            x = np.asarray(x)
            want = DTYPES[spec.values[vid].dtype]
            if x.dtype != want:
                hint = " (an ml_dtypes.bfloat16 array, e.g. x.astype(ml_dtypes.bfloat16))" if want.kind == "V" else ""
                raise ProgramError(f"{self.where}: input {pos} ({spec.values[vid].name}) must be {want}{hint}, got {x.dtype}")
            arrays.append(x)
        bound = self._bind(self._bind_symbols(arrays))
        if self._fixed is not None:
            self._static = bound
        return bound

    def arena_bytes(self) -> int:
        """Planned arena size in bytes.

        Example:
            >>> load("mlp.tsp").method("forward").arena_bytes()  # doctest: +SKIP
            8192
        """
        return self.spec.arena_size

    def scratch_bytes(self) -> int:
        """Bytes of the kernels' own buffers outside the arena (padded copies, im2col columns,
        per-channel weight copies): the largest over the shapes bound so far (0 before a call).

        Example:
            >>> load("mlp.tsp").method("forward").scratch_bytes()  # doctest: +SKIP
            0
        """
        return self._scratch

    def tensor_bytes(self) -> int:
        """Sum of the upper-bound sizes of every arena tensor (what a plan without reuse needs).

        Example:
            >>> load("mlp.tsp").method("forward").tensor_bytes()  # doctest: +SKIP
            12288
        """
        upper = {s: hi for s, (_, hi) in self.spec.symbols.items()}
        return sum(nbytes(v.dtype, evaluate_shape(v.shape, upper)) for v in self.spec.values if v.kind in ("input", "arena"))


class Program:
    """A loaded program: methods by name, weights mapped from the file.

    Example:
        >>> prog = load("model.tsp")  # doctest: +SKIP
        >>> sorted(prog.methods)  # doctest: +SKIP
        ['encode', 'forward']
    """

    def __init__(self, spec: ProgramSpec, buf: Any, path: str) -> None:
        self.spec = spec
        self.path = path
        self._buf = buf
        weights: dict[str, np.ndarray] = {}
        base = spec.weights.data_start
        for key, info in spec.weights.tensors.items():
            if info.dtype not in DTYPES:
                continue  # not referenced by any value (parse() checked the referenced ones)
            arr = np.frombuffer(buf, DTYPES[info.dtype], count=int(np.prod(info.shape, dtype=np.int64)), offset=base + info.start)
            weights[key] = arr.reshape(info.shape)
        self.weights = weights
        self.methods = {name: Method(m, weights, f"{path}: {name}") for name, m in spec.methods.items()}
        self.metadata = spec.metadata

    def method(self, name: str) -> Method:
        """The method called ``name``.

        Example:
            >>> load("model.tsp").method("encode")  # doctest: +SKIP
        """
        if name not in self.methods:
            raise ProgramError(f"{self.path}: no method {name!r} (has {sorted(self.methods)})")
        return self.methods[name]

    def run(self, *inputs: Any) -> Any:
        """Run ``forward`` (or the only method).

        Example:
            >>> load("mlp.tsp").run(x)  # doctest: +SKIP
        """
        name = "forward" if "forward" in self.methods or len(self.methods) != 1 else next(iter(self.methods))
        return self.method(name)(*inputs)


def load(path: str | os.PathLike[str]) -> Program:
    """Map, validate and prepare a program file for running.

    Example:
        >>> prog = load("mlp.tsp")  # doctest: +SKIP
    """
    path = str(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            buf: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except OSError as exc:
        raise ProgramError(f"{path}: cannot open: {exc}") from None
    return Program(parse(buf, name=path), buf, path)


def loads(data: bytes, name: str = "<bytes>") -> Program:
    """Validate and prepare a program held in memory.

    Example:
        >>> loads(Path("mlp.tsp").read_bytes())  # doctest: +SKIP
    """
    return Program(parse(data, name=name), data, name)


__all__ = ["Method", "Program", "ProgramError", "load", "loads", "Path"]
