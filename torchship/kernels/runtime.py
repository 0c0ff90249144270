"""``@ts.kernel``: bind arguments, pick a config, compile, and launch on a fast cached path.

Flow of a call: ``TORCHSHIP_INTERPRET=1`` runs the body eagerly (:func:`torchship.kernels.ref.run`).
Otherwise the arguments' key (dtypes, ranks, size-1 dims, contiguity) selects a
:class:`BoundKernel` (created once per key by tracing the host code: each launch site builds its
Tile IR from the captured values, and the ConfigSpace is derived from those IRs); its runner
(pinned config, autotuned, or the space's default) runs the rewritten host code, and each launch
site looks up its compiled launcher by the captured values' spec and calls it.

Example:
    >>> import torch, torchship as ts
    >>> from examples.kernels.add import add          # doctest: +SKIP
    >>> add(torch.ones(3), torch.ones(3))            # doctest: +SKIP
    tensor([2., 2., 2.])
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from torchship.kernels.backends.triton.dispatch import SiteHook, TraceHook
from torchship.kernels.backends.triton.launcher import CompiledLaunch, compile_launch
from torchship.kernels.config import Config, ConfigSpace, LaunchSpec, ReductionSpec
from torchship.kernels.errors import KernelConfigError, KernelError, KernelLaunchError
from torchship.kernels.frontend import analysis
from torchship.kernels.frontend.captures import BlockSym
from torchship.kernels.frontend.device import DeviceBuilder
from torchship.kernels.frontend.host import ParsedKernel, parse_kernel
from torchship.kernels.ir import Launch
from torchship.kernels.specs import BlockRegistry

__all__ = ["BoundKernel", "Kernel", "kernel"]


_ENV = getattr(os, "environ", None)
_ENV_DATA = getattr(_ENV, "_data", None)


if _ENV_DATA is not None and os.name == "posix":  # read raw: no str encoding per call
    _env_get, _INTERPRET_KEY, _ONE = _ENV_DATA.get, b"TORCHSHIP_INTERPRET", b"1"
else:
    _env_get, _INTERPRET_KEY, _ONE = os.environ.get, "TORCHSHIP_INTERPRET", "1"


def _interpret_mode() -> bool:
    """TORCHSHIP_INTERPRET=1, read on every call (cheaply: no str encoding on posix)."""
    return _env_get(_INTERPRET_KEY) == _ONE


def _arg_key(a: Any) -> Any:
    # a tensor's sizes by power-of-two bucket (0: size 1, -1: size 0): the config space and
    # its default derive from next_pow2 of the sizes, so each bucket gets its own space,
    # default and autotuned config (a small first call no longer sets the blocks of a large
    # later one)
    if isinstance(a, torch.Tensor):
        buckets = tuple([(s - 1).bit_length() if s else -1 for s in a.shape])
        return (a.dtype, a.dim(), a.is_cuda, buckets, a.is_contiguous())
    if isinstance(a, bool):
        return ("b", a)
    if isinstance(a, int):
        return "i"
    if isinstance(a, float):
        return "f"
    if a is None or isinstance(a, (str, torch.dtype)):
        return ("c", a)
    if isinstance(a, (tuple, list)):
        return tuple(_arg_key(x) for x in a)
    return ("o", type(a).__name__)


def _make_fast_key(args: tuple[Any, ...]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """A generated key function for calls shaped like ``args`` (same result as the generic
    ``tuple(map(_arg_key, args))``; raises on other arities/types, then the generic runs)."""
    names = [f"a{i}" for i in range(len(args))]
    body = [f"    {', '.join(names)}{',' if len(names) == 1 else ''} = args"] if names else []
    parts = []
    for n, a in zip(names, args):
        if type(a) is torch.Tensor:
            body.append(f"    s_{n} = {n}.shape")
            parts.append(f"({n}.dtype, {n}.dim(), {n}.is_cuda, tuple([(s - 1).bit_length() if s "
                         f"else -1 for s in s_{n}]), {n}.is_contiguous())")
        else:
            parts.append(f"_arg_key({n})")
    if not names:
        body.append("    if args: raise TypeError")
    src = "def key(args):\n" + "\n".join(body) + f"\n    return ({', '.join(parts)}{',' if len(parts) == 1 else ''})\n"
    ns: dict[str, Any] = {"_arg_key": _arg_key}
    exec(compile(src, "<torchship arg key>", "exec"), ns)  # our own generated code
    return ns["key"]


def _block_ptr_available() -> bool:
    import triton.language as tl

    fn = getattr(tl, "make_block_ptr", None)
    return fn is not None and "removed" not in (fn.__doc__ or "")


def _tdesc_available(device_type: str, capability: tuple[int, int]) -> bool:
    import triton.language as tl

    if not hasattr(tl, "make_tensor_descriptor"):
        return False
    return device_type == "cpu" or capability >= (9, 0)


_ALLOCATOR_SET = False


def _ensure_allocator() -> None:
    """Device-side tensor descriptors need scratch memory from a Triton allocator."""
    global _ALLOCATOR_SET
    if _ALLOCATOR_SET:
        return
    import triton

    def alloc(size: int, alignment: int, stream: Any) -> torch.Tensor:
        return torch.empty(size, dtype=torch.int8, device="cuda")

    if hasattr(triton, "set_allocator"):
        triton.set_allocator(alloc)
    _ALLOCATOR_SET = True


class _HostCtx:
    """What the rewritten host code calls: launch hooks and block-size/tunable lookups."""

    def __init__(self, hooks: list[Any], syms: list[BlockSym], config: Config | None,
                 tunables: dict[str, tuple[Any, ...]]) -> None:
        self.L = hooks
        self.syms = syms
        self.config = config
        self.tunables = tunables

    def block_size(self, index: int, lo: int, hi: int) -> BlockSym:
        while len(self.syms) <= index:
            self.syms.append(BlockSym(len(self.syms), int(lo), int(hi)))
        return self.syms[index]

    def tunable(self, name: str, choices: Sequence[Any]) -> Any:
        options = tuple(choices)
        if not options:
            raise KernelConfigError(f"register_tunable({name!r}): choices must not be empty")
        self.tunables.setdefault(name, options)
        if self.config is not None and name in self.config.tunables:
            return self.config.tunables[name]
        return options[0]


class BoundKernel:
    """A kernel specialised on one argument key: its IRs, ConfigSpace and compiled runners."""

    def __init__(self, kernel: Kernel, key: tuple[Any, ...], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
        self.kernel = kernel
        self.key = key
        self.parsed: ParsedKernel = kernel._parse()
        self.device_type = _device_type(args, kwargs)
        self.registry = BlockRegistry()
        self.syms: list[BlockSym] = []
        self.tunables: dict[str, tuple[Any, ...]] = {}
        self._trace: dict[int, Launch] = {}
        self._runners: dict[Config, Callable[..., Any]] = {}
        self._runner: Callable[..., Any] | None = None
        self._launches: dict[Config, list[CompiledLaunch]] = {}
        if self.device_type == "cuda":
            props = torch.cuda.get_device_properties(_device(args, kwargs))
            self.num_programs = int(props.multi_processor_count)
            self.capability = (props.major, props.minor)
        else:
            self.num_programs = 4
            self.capability = (0, 0)
        self._run_trace(args, kwargs, None, None)
        self._space = self._derive_space()

    # ------------------------------------------------------------------ IR
    def _build(self, index: int, a: tuple[Any, ...], bs: Any, c: tuple[Any, ...],
               config: Config | None) -> tuple[Launch, DeviceBuilder]:
        site = self.parsed.sites[index]
        builder = DeviceBuilder(self.parsed, site, a, bs, c, self.registry, self.syms)
        launch = builder.build()
        return launch, builder

    def _run_trace(self, args: tuple[Any, ...], kwargs: dict[str, Any], config: Config | None,
                   collect: list[Any] | None) -> None:
        hooks = [TraceHook(self, i, config, collect) for i in range(len(self.parsed.sites))]
        ctx = _HostCtx(hooks, self.syms, config, self.tunables)
        with torch.no_grad():
            self.parsed.host(ctx, *args, **kwargs)

    def _slots(self) -> tuple[dict[int, int], dict[int, int]]:
        red_off: dict[int, int] = {}
        order_slot: dict[int, int] = {}
        n_red = n_order = 0
        for idx in sorted(self._trace):
            launch = self._trace[idx]
            red_off[idx] = n_red
            n_red += len(analysis.full_dims(launch))
            if len(launch.grid_tiles) >= 2:
                order_slot[idx] = n_order
                n_order += 1
        return red_off, order_slot

    def _derive_space(self) -> ConfigSpace:
        red_off, _ = self._slots()
        reductions: list[ReductionSpec] = []
        launches: list[LaunchSpec] = []
        for idx in sorted(self._trace):
            launch = self._trace[idx]
            infos = analysis.full_dims(launch)
            slot_of = {info.root.id: red_off[idx] + k for k, info in enumerate(infos)}
            for info in infos:
                hint = _hint_of(launch, info.root.size)
                reductions.append(ReductionSpec(info.root.label, int(info.root.static or hint or 1024),
                                                info.rollable, info.in_dot))
            shapes = []
            for shape in analysis.value_shapes(launch):
                shapes.append(tuple(analysis.dim_key(d, slot_of) for d in shape))
            grid_params = [t.param if getattr(t, "param", None) is not None else -1
                           for t in launch.grid_tiles]
            walked = analysis.walk_nodes(launch.body)
            dots = [n for n, _ in walked if n.op == "dot"]
            itemsize = max((n.inputs[0].dtype.itemsize for n in dots), default=2)
            byte_dots = any(min(x.dtype.itemsize for x in n.inputs[:2]) == 1 for n in dots)
            loads = [(tuple(analysis.dim_key(d, slot_of) for d in n.out.shape),
                      n.attrs["tensor"].dtype.itemsize, bool(path))
                     for n, path in walked if n.op == "load"]
            read = [n.attrs["tensor"].name for n, _ in walked if n.op == "load"]
            inner = bool(analysis.walk_loops(launch.body))
            fixed = math.prod(-(-_extent_of(launch, t) // t.fixed) for t in launch.grid_tiles
                              if getattr(t, "param", None) is None and getattr(t, "fixed", None))
            launches.append(LaunchSpec(len(launch.grid_tiles), grid_params, shapes, bool(dots),
                                       itemsize, loads, inner, fixed,
                                       len(set(read)) < len(read), byte_dots))
        indexing = ["pointer"]
        if _block_ptr_available():
            indexing.append("block_ptr")
        if _tdesc_available(self.device_type, self.capability):
            indexing.append("tensor_descriptor")
        return ConfigSpace(self.registry.params, launches, reductions, self.tunables, indexing,
                           self.device_type)

    @property
    def config_space(self) -> ConfigSpace:
        """The valid configs of this bound kernel."""
        return self._space

    def _reduction_index(self, launch: Launch) -> dict[int, int]:
        red_off, _ = self._slots()
        off = red_off.get(launch.index, 0)
        return {info.root.id: off + k for k, info in enumerate(analysis.full_dims(launch))
                if info.rollable}

    def _compile_ir(self, launch: Launch, config: Config) -> CompiledLaunch:
        _, order_slot = self._slots()
        launch.order_slot = order_slot.get(launch.index)  # type: ignore[attr-defined]
        if config.indexing == "tensor_descriptor" and self.device_type == "cuda":
            _ensure_allocator()
        compiled = compile_launch(launch, config, self._reduction_index(launch),
                                  self.device_type, config.indexing, self.num_programs)
        if os.environ.get("TORCHSHIP_PRINT_CODE") == "1":
            print(compiled.source)
        return compiled

    # ------------------------------------------------------------------ public API
    def compile(self, config: Config) -> Callable[..., Any]:
        """A function that runs the host code and launches the kernels with ``config``.

        Example:
            >>> run = bound.compile(bound.config_space.default())   # doctest: +SKIP
            >>> out = run(x)                                        # doctest: +SKIP
        """
        runner = self._runners.get(config)
        if runner is not None:
            return runner
        config = self._space.complete(config)
        self._space.validate(config)
        hooks = [SiteHook(self, config, i) for i in range(len(self.parsed.sites))]
        ctx = _HostCtx(hooks, self.syms, config, self.tunables)
        # no autograd wrapper: launches record nothing, and the host code is the user's own
        run = functools.partial(self.parsed.host, ctx)
        self._runners[config] = run
        return run

    def to_triton_code(self, config: Config | None = None, args: Sequence[Any] | None = None,
                       kwargs: dict[str, Any] | None = None) -> str:
        """Readable Triton source of every launch for ``config`` (default config if None)."""
        config = self._space.complete(config) if config else self._space.default()
        self._space.validate(config)
        launches = [self._trace[i] for i in sorted(self._trace)]
        if config.tunables and args is not None:
            collected: list[Launch] = []
            self._run_trace(tuple(args), dict(kwargs or {}), config, collected)
            launches = collected
        parts = []
        for launch in launches:
            _, order_slot = self._slots()
            launch.order_slot = order_slot.get(launch.index)  # type: ignore[attr-defined]
            from torchship.kernels.backends.triton.launcher import generate

            src, _ = generate(launch, config, self._reduction_index(launch),
                              f"_{launch.name}_kernel{launch.index}", config.indexing,
                              self.device_type)
            parts.append(src)
        return "\n\n".join(parts)

    def key_dict(self) -> dict[str, Any]:
        """The key as stable JSON-able data (for the autotune cache)."""
        return json.loads(json.dumps({"args": _jsonable(self.key)}))

    @property
    def source_hash(self) -> str:
        """Hash of the kernel's source text and of the helpers it inlines (changes when
        either is edited)."""
        if not self.parsed.inlined:
            return self.kernel.source_hash
        text = "\n".join([self.kernel.source_hash, *(
            f"{k}\n{v}" for k, v in sorted(self.parsed.inlined.items()))])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _choose(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[..., Any]:
        k = self.kernel
        if k.pinned is not None:
            config = k.pinned
        elif k.configs and len(k.configs) == 1:
            config = k.configs[0]
        else:
            config = self._autotune(args, kwargs, _effort(self.device_type), None)
        self._runner = self.compile(config)
        return self._runner

    def _autotune(self, args: tuple[Any, ...], kwargs: dict[str, Any], effort: str,
                  budget_s: float | None) -> Config:
        if effort == "none" and not self.kernel.configs:
            return self._space.default()
        try:
            from torchship.kernels.autotune import tune
        except ImportError:
            return self._space.default()
        return tune(self, args, effort=effort, budget_s=budget_s, kwargs=kwargs)


def _effort(device_type: str) -> str:
    env = os.environ.get("TORCHSHIP_AUTOTUNE_EFFORT")
    if env:
        if env not in ("none", "quick", "full"):
            raise KernelConfigError(f"TORCHSHIP_AUTOTUNE_EFFORT={env!r}: expected none, quick "
                                    "or full")
        return env
    return "quick" if device_type == "cuda" else "none"


def _hint_of(launch: Launch, value: Any) -> Any:
    for p in launch.args:
        if p.value is value:
            return p.hint
    return None


def _extent_of(launch: Launch, tile: Any) -> int:
    """``end - begin`` of a grid tile at the bound sizes (1 when not known)."""
    ends = []
    for x in (tile.begin, tile.end):
        v = x if isinstance(x, int) else getattr(x, "static", None)
        ends.append(v if isinstance(v, int) else _hint_of(launch, x))
    return max(1, ends[1] - ends[0]) if all(isinstance(e, int) for e in ends) else 1


def _jsonable(x: Any) -> Any:
    if isinstance(x, (tuple, list)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.dtype):
        return str(x)
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return repr(x)


def _device(args: Sequence[Any], kwargs: dict[str, Any]) -> torch.device:
    from torchship.kernels.ref import kernel_device

    return kernel_device(args, kwargs)


def _device_type(args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    dev = _device(args, kwargs)
    if dev.type not in ("cpu", "cuda"):
        raise KernelLaunchError(f"kernels run on cpu (Triton interpreter) or cuda tensors, "
                                f"got {dev.type}")
    return dev.type


class Kernel:
    """A ``@ts.kernel`` function: call it like the original function.

    Example:
        >>> k = Kernel(lambda x: x)          # doctest: +SKIP
    """

    def __init__(self, fn: Callable[..., Any], config: Config | None = None,
                 configs: Sequence[Config] | None = None) -> None:
        if config is not None and not isinstance(config, Config):
            raise KernelConfigError(f"@ts.kernel(config=...) expects a ts.Config, got "
                                    f"{type(config).__name__}")
        self.fn = fn
        self.pinned = config
        self.configs = list(configs) if configs else None
        self._parsed: ParsedKernel | None = None
        self._bound: dict[Any, BoundKernel] = {}
        self._fast_key: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None
        functools.update_wrapper(self, fn)

    def _parse(self) -> ParsedKernel:
        if self._parsed is None:
            self._parsed = parse_kernel(self.fn)
        return self._parsed

    @property
    def source_hash(self) -> str:
        """sha256 of the kernel's source (first 16 hex digits)."""
        p = self._parse()
        return hashlib.sha256("\n".join(p.lines).encode()).hexdigest()[:16]

    def _key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        key = tuple(map(_arg_key, args))
        if kwargs:
            key += tuple((k, _arg_key(v)) for k, v in sorted(kwargs.items()))
        return key

    def bind(self, args: Sequence[Any], kwargs: dict[str, Any] | None = None) -> BoundKernel:
        """The :class:`BoundKernel` for these arguments (traced once per key)."""
        args = tuple(args)
        kwargs = dict(kwargs or {})
        key = self._key(args, kwargs)
        bound = self._bound.get(key)
        if bound is None:
            bound = BoundKernel(self, key, args, kwargs)
            self._bound[key] = bound
        return bound

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # the cached path: generated key -> bound kernel -> its runner (host code + launches)
        if _env_get(_INTERPRET_KEY) != _ONE:
            fast = self._fast_key
            if fast is not None and not kwargs:
                try:
                    bound = self._bound.get(fast(args))
                except Exception:  # other arity/types than first seen: generic key
                    bound = None
                if bound is not None:
                    runner = bound._runner
                    if runner is not None:
                        return runner(*args)
        return self._call(args, kwargs)

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Everything but the cached path: interpret mode, new keys, the first call."""
        if _interpret_mode():
            from torchship.kernels import ref

            return ref.run(self.fn, args, kwargs)
        key = tuple(map(_arg_key, args))
        if kwargs:
            key += tuple((k, _arg_key(v)) for k, v in sorted(kwargs.items()))
        elif self._fast_key is None:
            self._fast_key = _make_fast_key(args)
        bound = self._bound.get(key)
        if bound is None:
            bound = self.bind(args, kwargs)
        runner = bound._runner
        if runner is None:
            runner = bound._choose(args, kwargs)
        return runner(*args, **kwargs)

    def to_triton_code(self, config: Config | None = None, args: Sequence[Any] = (),
                       kwargs: dict[str, Any] | None = None) -> str:
        """Readable Triton source for ``config`` (default: pinned or the space's default)."""
        bound = self.bind(args, kwargs)
        return bound.to_triton_code(config or self.pinned, args, kwargs)

    def autotune(self, args: Sequence[Any], kwargs: dict[str, Any] | None = None,
                 effort: str = "quick", budget_s: float | None = None) -> Config:
        """Search the config space for these arguments; the winner is used by later calls."""
        bound = self.bind(args, kwargs)
        config = bound._autotune(tuple(args), dict(kwargs or {}), effort, budget_s)
        bound._runner = bound.compile(config)
        return config

    def sample_configs(self, args: Sequence[Any], n: int, seed: int = 0) -> list[Config]:
        """``n`` distinct random valid configs (plus the default first) for these args."""
        space = self.bind(args).config_space
        rng = random.Random(seed)
        out = [space.default()]
        for _ in range(n * 10):
            if len(out) >= n:
                break
            c = space.sample(rng)
            if c not in out:
                out.append(c)
        return out


def kernel(fn: Callable[..., Any] | None = None, *, config: Config | None = None,
           configs: Sequence[Config] | None = None) -> Any:
    """Decorator: compile a tile-language function to Triton.

    Example:
        >>> @kernel(config=Config(block_sizes=[64]))     # doctest: +SKIP
        ... def add(x, y): ...
    """
    if fn is None:
        return lambda f: Kernel(f, config=config, configs=configs)
    return Kernel(fn, config=config, configs=configs)


__all__ += ["KernelError"]
