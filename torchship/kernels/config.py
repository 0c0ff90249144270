"""``Config`` (one point of a kernel's tuning space) and ``ConfigSpace`` (all of them).

A :class:`Config` fixes every knob of the generated code: block sizes (one per tile block
parameter, in order of appearance), warps, pipeline stages, the order in which the grid
dimensions of each launch are walked, L2 grouping of 2-D grids, flat, persistent or warp-specialised persistent programs,
the indexing strategy of loads/stores, the cache eviction hint of loads (``""``: none,
``"first"``: streamed data, ``"last"``: reused data; for a tensor a kernel reads more than
once, ``"stream"``: its last read ``evict_first``, ``"reuse"``: also its earlier reads
``evict_last``) and, per full-dimension reduction,
persistent (``None``) or a looped reduction with a chunk size. A :class:`ConfigSpace` is derived from a kernel's IR
by the compiler (see :mod:`torchship.kernels.runtime`) and lists the valid choices.

Example:
    >>> c = Config(block_sizes=[64, 32], num_warps=8)
    >>> Config.from_dict(c.to_dict()) == c
    True
    >>> c.block_sizes
    [64, 32]
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Iterator, Sequence
from typing import Any

from torchship.kernels.errors import KernelConfigError
from torchship.kernels.specs import BlockParamSpec, LaunchSpec, ReductionSpec

__all__ = ["BlockParamSpec", "Config", "ConfigSpace", "LaunchSpec", "ReductionSpec"]

PID_TYPES = ("flat", "persistent", "persistent_ws")
INDEXINGS = ("pointer", "block_ptr", "tensor_descriptor")
EVICTIONS = ("", "first", "last", "stream", "reuse")
#: the eviction modes that differ from ``first`` only for tensors read more than once
REREAD_EVICTIONS = ("stream", "reuse")
#: register caps searched for fused dot kernels (flash attention): 128 registers a thread let
#: two 8-warp programs share an SM, where ptxas may take a few more and halve the occupancy
MAXNREGS = (None, 128)
_KNOWN = {
    "load_eviction",
    "maxnreg",
    "block_sizes",
    "num_warps",
    "num_stages",
    "loop_orders",
    "l2_grouping",
    "pid_type",
    "indexing",
    "reduction_loops",
}


class Config:
    """One choice for every knob of a kernel; JSON-able, hashable, equal by value.

    Unknown keyword arguments are user tunables (``ts.register_tunable``).

    Example:
        >>> Config(block_sizes=[32], unroll=2).tunables
        {'unroll': 2}
        >>> hash(Config(num_warps=4)) == hash(Config(num_warps=4))
        True
    """

    __slots__ = (
        "_key",
        "block_sizes",
        "indexing",
        "l2_grouping",
        "load_eviction",
        "loop_orders",
        "maxnreg",
        "num_stages",
        "num_warps",
        "pid_type",
        "reduction_loops",
        "tunables",
    )

    def __init__(
        self,
        block_sizes: Sequence[int] = (),
        num_warps: int = 4,
        num_stages: int = 2,
        loop_orders: Sequence[Sequence[int]] = (),
        l2_grouping: int = 1,
        pid_type: str = "flat",
        indexing: str = "pointer",
        reduction_loops: Sequence[int | None] = (),
        load_eviction: str = "",
        maxnreg: int | None = None,
        **tunables: Any,
    ) -> None:
        self.block_sizes = [int(b) for b in block_sizes]
        self.num_warps = int(num_warps)
        self.num_stages = int(num_stages)
        self.loop_orders = [[int(i) for i in order] for order in loop_orders]
        self.l2_grouping = int(l2_grouping)
        self.pid_type = str(pid_type)
        self.indexing = str(indexing)
        self.reduction_loops = [None if r is None else int(r) for r in reduction_loops]
        self.load_eviction = str(load_eviction)
        self.maxnreg = None if maxnreg is None else int(maxnreg)
        self.tunables = dict(tunables)
        if self.pid_type not in PID_TYPES:
            raise KernelConfigError(f"Config(pid_type={pid_type!r}): expected one of {PID_TYPES}")
        if self.indexing not in INDEXINGS:
            raise KernelConfigError(f"Config(indexing={indexing!r}): expected one of {INDEXINGS}")
        if self.load_eviction not in EVICTIONS:
            raise KernelConfigError(
                f"Config(load_eviction={load_eviction!r}): expected one of {EVICTIONS}")
        if self.maxnreg is not None and not 24 <= self.maxnreg <= 255:
            raise KernelConfigError(f"Config(maxnreg={maxnreg!r}): expected None or 24..255 "
                                    "registers a thread")
        self._key = json.dumps(self.to_dict(), sort_keys=True, default=repr)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; :meth:`from_dict` reverses it.

        Example:
            >>> Config(num_warps=2).to_dict()["num_warps"]
            2
        """
        d: dict[str, Any] = {
            "block_sizes": list(self.block_sizes),
            "num_warps": self.num_warps,
            "num_stages": self.num_stages,
            "loop_orders": [list(o) for o in self.loop_orders],
            "l2_grouping": self.l2_grouping,
            "pid_type": self.pid_type,
            "indexing": self.indexing,
            "reduction_loops": list(self.reduction_loops),
        }
        if self.load_eviction:  # left out when unset: configs written before it stay equal
            d["load_eviction"] = self.load_eviction
        if self.maxnreg is not None:
            d["maxnreg"] = self.maxnreg
        d.update(self.tunables)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Rebuild a Config from :meth:`to_dict` output.

        Example:
            >>> Config.from_dict({"block_sizes": [16], "pid_type": "persistent"}).pid_type
            'persistent'
        """
        if not isinstance(data, dict):
            raise KernelConfigError(f"Config.from_dict: expected a dict, got {type(data).__name__}")
        return cls(**data)

    def replace(self, **changes: Any) -> Config:
        """A copy with some knobs changed.

        Example:
            >>> Config(num_warps=4).replace(num_warps=8).num_warps
            8
        """
        d = self.to_dict()
        d.update(changes)
        return Config.from_dict(d)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        parts = [f"{k}={v!r}" for k, v in self.to_dict().items()]
        return f"Config({', '.join(parts)})"


def _pow2_range(lo: int, hi: int) -> list[int]:
    lo = 1 << max(0, math.ceil(math.log2(max(lo, 1))))
    out = []
    b = lo
    while b <= hi:
        out.append(b)
        b *= 2
    return out or [lo]


def _next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def _block_cap(bp: BlockParamSpec, gpu: bool) -> int:
    """The largest block size searched: 256 in a dot, 4096 for a grid tile and, on a GPU, 8192
    for an inner loop's tile (cross entropy 4096x32000 bf16 on an H100: 8192 wide on 4 warps
    104.0 µs, 4096 104.8; a row in one 16384/32768 block was slower, 110.9 µs at best;
    ``benchmarks/kernels_probe_loops.py``)."""
    if bp.in_dot:
        return 256
    return 8192 if gpu and not bp.grid else 4096


class ConfigSpace:
    """The valid configs of one bound kernel (derived from its IR by the compiler).

    ``params`` maps a knob name to its choices; a config is valid when every knob takes one of
    its choices and each launch's largest block fits the element budget of the device.

    Example:
        >>> space = ConfigSpace([BlockParamSpec("tm", 1, 1024, 100)],
        ...                     [LaunchSpec(1, [0], [(("B", 0), ("R", 0))])],
        ...                     [ReductionSpec("x.size(1)", 300, True)], device="cpu")
        >>> space.validate(space.default())
        >>> cfg = space.sample(random.Random(0))
        >>> space.validate(cfg)
    """

    def __init__(
        self,
        block_params: Sequence[BlockParamSpec],
        launches: Sequence[LaunchSpec],
        reductions: Sequence[ReductionSpec] = (),
        tunables: dict[str, Sequence[Any]] | None = None,
        indexing: Sequence[str] = ("pointer",),
        device: str = "cpu",
    ) -> None:
        self.block_params = list(block_params)
        self.launches = list(launches)
        self.reductions = list(reductions)
        self.tunables = {k: tuple(v) for k, v in (tunables or {}).items()}
        self.device = device
        gpu = device == "cuda"
        self.max_elems = (1 << 16) if gpu else (1 << 14)
        # a tl.dot block is >= 16 wide, >= 32 with 1-byte operands (Triton refuses K < 32)
        self.dot_lo = 32 if any(launch.byte_dots for launch in self.launches) else 16
        params: dict[str, list[Any]] = {}
        for i, bp in enumerate(self.block_params):
            lo = max(bp.lo, self.dot_lo if bp.in_dot else 1)
            cap = _next_pow2(bp.extent)
            hi = min(bp.hi, max(cap, lo), _block_cap(bp, gpu))
            if not gpu:
                lo = max(lo, min(16, hi))  # the interpreter pays per program: no tiny blocks
            if bp.dot_batch and bp.lo <= 1:
                params[f"block_sizes[{i}]"] = [1]  # batched dots run as 2-D dots
                continue
            params[f"block_sizes[{i}]"] = _pow2_range(lo, max(lo, hi))
        params["num_warps"] = [1, 2, 4, 8, 16] if gpu else [1, 2, 4, 8]
        params["num_stages"] = [1, 2, 3, 4, 5] if gpu else [1, 2, 3]
        n_orders = 0
        for launch in self.launches:
            if launch.grid_dims >= 2:
                perms = [list(p) for p in itertools.permutations(range(launch.grid_dims))]
                params[f"loop_orders[{n_orders}]"] = perms
                n_orders += 1
        self._n_orders = n_orders
        params["l2_grouping"] = [1, 4, 8, 16, 32, 64] if n_orders else [1]
        # persistent_ws: the persistent tile loop flattened and warp-specialised (a Triton
        # producer/consumer split that Hopper dots profit from; nothing else does)
        dots = gpu and any(launch.has_dot for launch in self.launches)
        params["pid_type"] = [p for p in PID_TYPES if dots or p != "persistent_ws"]
        params["indexing"] = list(indexing)
        # the interpreter ignores eviction hints: no point searching them on CPU
        rereads = any(launch.rereads for launch in self.launches)
        params["load_eviction"] = [e for e in EVICTIONS if rereads or e not in REREAD_EVICTIONS] \
            if gpu else [""]
        fused = gpu and any(launch.has_dot and launch.has_full_dim for launch in self.launches)
        params["maxnreg"] = list(MAXNREGS) if fused else [None]
        for i, red in enumerate(self.reductions):
            choices: list[int | None] = [None]
            if red.rollable:
                lo = self.dot_lo if red.in_dot else 32
                top = min(_next_pow2(red.size) // 2, 4096 if gpu else 1024)
                choices += _pow2_range(lo, top) if top >= lo else []
            params[f"reduction_loops[{i}]"] = choices
        for name, choices in self.tunables.items():
            params[name] = list(choices)
        self.params = params

    # ---------------------------------------------------------------- construction helpers
    def _from_choice(self, choice: dict[str, Any]) -> Config:
        tun = {k: choice[k] for k in self.tunables}
        return Config(
            block_sizes=[choice[f"block_sizes[{i}]"] for i in range(len(self.block_params))],
            num_warps=choice["num_warps"],
            num_stages=choice["num_stages"],
            loop_orders=[choice[f"loop_orders[{i}]"] for i in range(self._n_orders)],
            l2_grouping=choice["l2_grouping"],
            pid_type=choice["pid_type"],
            indexing=choice["indexing"],
            load_eviction=choice["load_eviction"],
            maxnreg=choice["maxnreg"],
            reduction_loops=[
                choice[f"reduction_loops[{i}]"] for i in range(len(self.reductions))
            ],
            **tun,
        )

    def _to_choice(self, config: Config) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for i in range(len(self.block_params)):
            d[f"block_sizes[{i}]"] = (
                config.block_sizes[i] if i < len(config.block_sizes) else "<missing>"
            )
        d["num_warps"] = config.num_warps
        d["num_stages"] = config.num_stages
        for i in range(self._n_orders):
            d[f"loop_orders[{i}]"] = (
                config.loop_orders[i] if i < len(config.loop_orders) else "<missing>"
            )
        d["l2_grouping"] = config.l2_grouping
        d["pid_type"] = config.pid_type
        d["indexing"] = config.indexing
        d["load_eviction"] = config.load_eviction
        d["maxnreg"] = config.maxnreg
        for i in range(len(self.reductions)):
            d[f"reduction_loops[{i}]"] = (
                config.reduction_loops[i] if i < len(config.reduction_loops) else "<missing>"
            )
        for k, choices in self.tunables.items():
            d[k] = config.tunables.get(k, choices[0])
        return d

    def _in_range(self, name: str, value: Any) -> bool:
        """Block sizes / chunks outside the size-capped search list are still valid when they
        are powers of two within the kernel's absolute bounds (a config tuned or pinned for
        one size must keep working for others)."""
        if not isinstance(value, int) or isinstance(value, bool) or value < 1 or \
                value & (value - 1):
            return False
        if name.startswith("block_sizes["):
            bp = self.block_params[int(name[12:-1])]
            lo = max(bp.lo, self.dot_lo if bp.in_dot else 1)
            return lo <= value <= min(bp.hi, _block_cap(bp, True))
        if name.startswith("reduction_loops["):
            red = self.reductions[int(name[16:-1])]
            return red.rollable and (self.dot_lo if red.in_dot else 32) <= value <= 4096
        return False

    def _known_value(self, name: str, value: Any) -> bool:
        """A value outside the searched choices that still runs: an eviction hint in a config
        tuned on a GPU runs on CPU (the interpreter ignores it); sizes see :meth:`_in_range`."""
        if name == "load_eviction":
            return value in EVICTIONS
        if name == "pid_type":
            return value in PID_TYPES
        if name == "maxnreg":  # a register cap tuned on a GPU: the interpreter ignores it
            return value in MAXNREGS
        return self._in_range(name, value)

    def _elems(self, choice: dict[str, Any], shape: tuple[tuple[str, int], ...]) -> int:
        elems = 1
        for kind, idx in shape:
            if kind == "B":
                elems *= choice[f"block_sizes[{idx}]"]
            elif kind == "R":
                chunk = choice[f"reduction_loops[{idx}]"]
                elems *= chunk or max(16, _next_pow2(self.reductions[idx].size))
            else:
                elems *= idx
        return elems

    def _smem_problem(self, choice: dict[str, Any]) -> str | None:
        """Pipelined loads in loops are multi-buffered in shared memory (num_stages copies)."""
        if self.device != "cuda":
            return None
        for li, launch in enumerate(self.launches):
            total = 0
            for shape, itemsize, in_loop in launch.loads:
                rolled = any(k == "R" and choice[f"reduction_loops[{i}]"] for k, i in shape)
                if in_loop or rolled:
                    total += self._elems(choice, shape) * itemsize
            need = total * max(1, choice["num_stages"])
            if need > 200 * 1024:
                return (f"launch {li}: ~{need // 1024} KiB of pipelined loads exceed the "
                        "shared memory (reduce block sizes or num_stages)")
        return None

    def _budget_problem(self, choice: dict[str, Any], threads: bool = True) -> str | None:
        smem = self._smem_problem(choice)
        if smem:
            return smem
        if threads and self.device == "cuda" and choice.get("pid_type") == "persistent_ws" \
                and choice["num_warps"] < 8:
            # Triton 3.6's warp specialisation (NVGPUWarpSpecialization) failed to compile
            # every bmm tile with 4 warps for sm_90 and none with 8 (132 tiles each, compiled
            # on CPU for sm_90); an H100 run met the same failure for causal attention
            return "pid_type='persistent_ws' needs num_warps >= 8 (Triton's warp specialisation)"
        for li, launch in enumerate(self.launches):
            for shape in launch.value_shapes:
                elems = self._elems(choice, shape)
                if elems > self.max_elems:
                    return (
                        f"launch {li}: a block of {elems} elements exceeds the budget of "
                        f"{self.max_elems} on {self.device}"
                    )
                # Blocks on few warps: a 128x256 dot tile on 1 warp (1024 fp32 accumulator
                # values per thread) hung Triton 3.6's compiler for over 15 s on H100 in the
                # autotuner (benchmarks/results/kernels.json, attention), and a 4x4096 cross
                # entropy block on 1 warp (512 values) ran past the 10 s compile timeout; such
                # configs spill registers and are never competitive: keep at most 256 values
                # of a block per thread, 128 in a dot launch (a 128x64 flash-attention block on
                # 1 warp, 256 values beside the dot's operands, ran past the 10 s compile
                # timeout at both suite shapes, 2026-11-27 08:56 UTC).
                per_thread = elems // (32 * choice["num_warps"])
                cap = 128 if launch.has_dot else 256
                if threads and self.device == "cuda" and per_thread > cap:
                    return (f"launch {li}: a block of {elems} elements on "
                            f"{choice['num_warps']} warps is {per_thread} values per thread "
                            f"(> {cap}: register spills, compile hangs); use more warps")
        return None

    # ---------------------------------------------------------------- public API
    def validate(self, config: Config) -> None:
        """Raise :class:`KernelConfigError` naming the first knob that is not valid.

        Example:
            >>> ConfigSpace([], [LaunchSpec(1)]).validate(Config(num_warps=3))
            Traceback (most recent call last):
            ...
            torchship.kernels.errors.KernelConfigError: num_warps=3 is not one of [1, 2, 4, 8]
        """
        if not isinstance(config, Config):
            raise KernelConfigError(f"expected a ts.Config, got {type(config).__name__}")
        if len(config.block_sizes) != len(self.block_params):
            names = [b.name for b in self.block_params]
            raise KernelConfigError(
                f"block_sizes has {len(config.block_sizes)} entries; this kernel has "
                f"{len(self.block_params)} block sizes ({', '.join(names) or 'none'})"
            )
        for k in config.tunables:
            if k not in self.tunables:
                raise KernelConfigError(f"unknown knob {k!r}: this kernel has no such tunable")
        choice = self._to_choice(config)
        for name, value in choice.items():
            if value not in self.params[name] and not self._known_value(name, value):
                raise KernelConfigError(f"{name}={value!r} is not one of {self.params[name]}")
        problem = self._budget_problem(choice)
        if problem:
            raise KernelConfigError(f"config not valid on {self.device}: {problem}")

    def complete(self, config: Config) -> Config:
        """``config`` with the knobs it leaves out taken from :meth:`default`: a user's
        ``Config(block_sizes=[64, 64], num_warps=8)`` need not spell out loop orders or
        reduction loops (or even block sizes). Knobs it gives are kept as given.

        Example:
            >>> space = ConfigSpace([BlockParamSpec("tm", 1, 1024, 100)], [LaunchSpec(1)])
            >>> space.complete(Config(num_warps=8)).block_sizes == space.default().block_sizes
            True
        """
        fill: dict[str, Any] = {}
        default = None
        for knob, needed in (("block_sizes", self.block_params), ("loop_orders", self._n_orders),
                             ("reduction_loops", self.reductions)):
            if needed and not getattr(config, knob):
                default = default or self.default()
                fill[knob] = getattr(default, knob)
        return config.replace(**fill) if fill else config

    def is_valid(self, config: Config) -> bool:
        """True when :meth:`validate` passes.

        Example:
            >>> ConfigSpace([], [LaunchSpec(1)]).is_valid(Config())
            True
        """
        try:
            self.validate(config)
        except KernelConfigError:
            return False
        return True

    def default(self) -> Config:
        """A valid, reasonable config from simple heuristics (no search).

        Example:
            >>> ConfigSpace([BlockParamSpec("t", 1, 4096, 10**6)], [LaunchSpec(1, [0])],
            ...             device="cuda").default().block_sizes
            [1024]
        """
        from torchship.kernels.defaults import default_choice

        return self._from_choice(default_choice(self))

    def _largest_block(self, choice: dict[str, Any]) -> int:
        shapes = (shape for launch in self.launches for shape in launch.value_shapes)
        return max((self._elems(choice, shape) for shape in shapes), default=1)

    def sample(self, rng: random.Random) -> Config:
        """A uniformly random valid config (rejection sampling over the knobs).

        Example:
            >>> s = ConfigSpace([BlockParamSpec("t", 1, 64, 64)], [LaunchSpec(1, [0])])
            >>> s.is_valid(s.sample(random.Random(1)))
            True
        """
        for _ in range(200):
            choice = {k: rng.choice(v) for k, v in self.params.items()}
            if self._budget_problem(choice) is None:
                return self._from_choice(choice)
        return self.default()

    def neighbors(self, config: Config, rng: random.Random, n: int = 8) -> list[Config]:
        """Up to ``n`` distinct valid configs that differ from ``config`` in one or two knobs.

        Example:
            >>> s = ConfigSpace([BlockParamSpec("t", 1, 64, 64)], [LaunchSpec(1, [0])])
            >>> all(s.is_valid(c) for c in s.neighbors(s.default(), random.Random(0)))
            True
        """
        base = self._to_choice(config)
        names = [k for k, v in self.params.items() if len(v) > 1]
        out: list[Config] = []
        seen = {config}
        for _ in range(n * 20):
            if len(out) >= n or not names:
                break
            choice = dict(base)
            for name in rng.sample(names, k=min(len(names), rng.choice((1, 2)))):
                options = [o for o in self.params[name] if o != base[name]]
                if options:
                    # block sizes and chunks: prefer a step to an adjacent power of two
                    choice[name] = rng.choice(options)
            if self._budget_problem(choice):
                continue
            cfg = self._from_choice(choice)
            if cfg not in seen:
                seen.add(cfg)
                out.append(cfg)
        return out

    def encode(self, config: Config) -> list[float]:
        """Numeric features for surrogate models (log2 of sizes, choice indices).

        Example:
            >>> ConfigSpace([], [LaunchSpec(1)]).encode(Config(num_warps=8))[:2]
            [3.0, 1.0]
        """
        choice = self._to_choice(config)
        feats: list[float] = []
        for name, options in self.params.items():
            value = choice[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                feats.append(float(options.index(value)) if value in options else -1.0)
            elif value is None:
                feats.append(0.0)
            else:
                feats.append(math.log2(value) if value > 0 else 0.0)
        return feats

    def size(self) -> int:
        """Number of knob combinations (before the element-budget filter).

        Example:
            >>> ConfigSpace([], [LaunchSpec(1)]).size() > 1
            True
        """
        return math.prod(len(v) for v in self.params.values())

    def enumerate(self) -> Iterator[Config]:
        """Every valid config (use for small spaces).

        Example:
            >>> s = ConfigSpace([], [LaunchSpec(1)])
            >>> sum(1 for _ in s.enumerate()) == s.size()
            True
        """
        names = list(self.params)
        for values in itertools.product(*(self.params[n] for n in names)):
            choice = dict(zip(names, values))
            if self._budget_problem(choice) is None:
                yield self._from_choice(choice)

    def __repr__(self) -> str:
        lines = [f"ConfigSpace(device={self.device!r}, size={self.size()})"]
        for name, choices in self.params.items():
            lines.append(f"  {name}: {choices}")
        return "\n".join(lines)
