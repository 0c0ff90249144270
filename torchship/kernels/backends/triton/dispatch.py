"""Launch-site dispatch: the objects the rewritten host code calls at each launch site.

:class:`SiteHook` (compiled mode) keys the captured values with a generated function
(:func:`fast_spec`) and calls the matching compiled launcher, compiling on a miss;
:class:`TraceHook` (binding) builds each site's IR without launching.

Example:
    >>> fast_spec((8,), None, (1.5,), False)((9,), None, (2.5,))
    (<class 'int'>, None, <class 'float'>)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from torchship.kernels.config import Config
from torchship.kernels.frontend.captures import spec_of, tdesc_spec

if TYPE_CHECKING:
    from torchship.kernels.backends.triton.launcher import CompiledLaunch
    from torchship.kernels.runtime import BoundKernel

__all__ = ["SiteHook", "TraceHook", "fast_spec"]


class SiteHook:
    """A launch site in compiled mode: spec of the captured values -> compiled launcher."""

    def __init__(self, bound: BoundKernel, config: Config, index: int) -> None:
        self.bound = bound
        self.config = config
        self.index = index
        self.cache: dict[Any, Callable[..., None]] = {}
        self.compiled: dict[Any, CompiledLaunch] = {}

        self.tdesc = config.indexing == "tensor_descriptor"

        self.fast: Callable[..., Any] | None = None
        self.fast_cache: dict[Any, Callable[..., None]] = {}

    def __call__(self, a: tuple[Any, ...], bs: Any, c: tuple[Any, ...]) -> None:
        fast = self.fast
        if fast is not None:
            try:
                fn = self.fast_cache.get(fast(a, bs, c))
            except Exception:  # captured values of other types than first seen
                fn = None
            if fn is not None:
                fn(a, bs, c)
                return
        self.slow(a, bs, c)

    def slow(self, a: tuple[Any, ...], bs: Any, c: tuple[Any, ...]) -> None:
        """Generic spec -> launcher (compiling on a miss); then remember the fast key."""
        key = (tuple(map(spec_of, a)), bs if not isinstance(bs, (list, tuple)) else
               tuple(bs), tuple(map(spec_of, c)))
        if self.tdesc:
            key += (tdesc_spec(c),)
        fn = self.cache.get(key)
        if fn is None:
            fn = self._compile(a, bs, c, key)
        if self.fast is None:
            self.fast = fast_spec(a, bs, c, self.tdesc)
        with contextlib.suppress(Exception):  # unhashable or unexpected types: stay slow
            self.fast_cache[self.fast(a, bs, c)] = fn
        fn(a, bs, c)

    def _compile(self, a: tuple[Any, ...], bs: Any, c: tuple[Any, ...], key: Any) \
            -> Callable[..., None]:
        b = self.bound
        launch, builder = b._build(self.index, a, bs, c, self.config)
        read = spec_reader(builder.specialized)
        full_key = (key, read(c))
        if builder.specialized:
            # a captured int or a tensor size compiled in as a constant: key on its value too
            hook_cache: dict[Any, Callable[..., None]] = {}

            def dispatch(a2: Any, bs2: Any, c2: Any) -> None:
                vals = read(c2)
                f = hook_cache.get(vals)
                if f is None:
                    launch2, _ = b._build(self.index, a2, bs2, c2, self.config)
                    f = b._compile_ir(launch2, self.config).launch
                    hook_cache[vals] = f
                f(a2, bs2, c2)

            self.cache[key] = dispatch
            return dispatch
        compiled = b._compile_ir(launch, self.config)
        self.compiled[full_key] = compiled
        self.cache[key] = compiled.launch
        return compiled.launch


def spec_reader(keys: set[Any]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """A function of the captured values giving those a launch was specialised on: captured
    ints (their index) and tensor sizes (their getter, e.g. ``c[3].shape[1]``, for a whole dim
    that a block is cut or joined along).

    Example:
        >>> spec_reader({1, "c[0].shape[1]"})((torch.zeros(2, 3), 7))
        (7, 3)
    """
    parts = "".join(f"{k if isinstance(k, str) else f'c[{k}]'}, " for k in sorted(keys, key=str))
    return eval(f"lambda c: ({parts})")  # noqa: S307 - getters written by the tracer


def fast_spec(a: tuple[Any, ...], bs: Any, c: tuple[Any, ...],
               tdesc: bool) -> Callable[..., Any]:
    """A generated function computing a site's key for captured values of these types.

    Only what the compiled code depends on: dtype/rank/device of tensors, values of bools,
    constants and block sizes, types of numbers (ints that were compiled in are keyed on their
    value by the specialising dispatcher)."""
    parts = []
    for i, v in enumerate(a):
        parts.append(f"len(a[{i}])" if isinstance(v, (tuple, list, torch.Size))
                     else f"type(a[{i}])")
    parts.append("bs" if not isinstance(bs, list) else "tuple(bs)")
    for i, v in enumerate(c):
        if isinstance(v, torch.Tensor):
            parts.append(f"c[{i}].dtype, c[{i}].dim(), c[{i}].is_cuda, "
                         f"c[{i}].numel() >= _caps.BIG_TENSOR")
            if tdesc:
                parts.append(f"_tdesc_ok(c[{i}])")
        elif isinstance(v, (bool, str, torch.dtype)) or v is None:
            parts.append(f"type(c[{i}]), c[{i}]")
        elif isinstance(v, (int, float)):
            parts.append(f"type(c[{i}])")
        else:
            parts.append(f"_spec_of(c[{i}])")
    src = f"def fast(a, bs, c):\n    return ({', '.join(parts)},)\n"
    from torchship.kernels.frontend import captures as _caps
    from torchship.kernels.frontend.captures import tdesc_ok

    ns: dict[str, Any] = {"_spec_of": spec_of, "_tdesc_ok": tdesc_ok, "_caps": _caps}
    exec(compile(src, "<torchship site key>", "exec"), ns)  # our own generated code
    return ns["fast"]


class TraceHook:
    def __init__(self, bound: BoundKernel, index: int, config: Config | None,
                 collect: list[Any] | None) -> None:
        self.bound = bound
        self.index = index
        self.config = config
        self.collect = collect

    def __call__(self, a: tuple[Any, ...], bs: Any, c: tuple[Any, ...]) -> None:
        launch, _ = self.bound._build(self.index, a, bs, c, self.config)
        if self.index not in self.bound._trace:
            self.bound._trace[self.index] = launch
        if self.collect is not None:
            self.collect.append(launch)
