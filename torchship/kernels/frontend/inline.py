"""Calls of plain Python helper functions from device code, inlined at trace time.

A helper is a module-level (or closure) ``def`` whose body is straight-line device code:
assignments, ``if`` on host constants and one trailing ``return``. Its parameters are bound
like Python binds them (defaults, keywords), its names resolve in its own module, and its body
is traced as if written at the call site (errors and generated-code comments point there).
Loops, ``*args``/``**kwargs`` and early returns are refused with a clear error.

Example:
    >>> import torch
    >>> def gelu_ish(v):
    ...     return v * torch.sigmoid(1.702 * v)
    >>> is_helper(gelu_ish), is_helper(torch.exp)
    (True, False)
"""

from __future__ import annotations

import ast
import collections
import functools
import inspect
import textwrap
import types
from typing import Any

from torchship.kernels.errors import KernelSyntaxError, KernelTypeError

MAX_DEPTH = 16
_FOREIGN = ("torch", "triton", "numpy", "torchship", "builtins", "math")


def is_helper(fobj: Any) -> bool:
    """True for a user's plain Python function (not torch's, numpy's or torchship's own).

    Example:
        >>> is_helper(len)
        False
    """
    if not isinstance(fobj, types.FunctionType):
        return False
    mod = (getattr(fobj, "__module__", "") or "").split(".")[0]
    return mod not in _FOREIGN


@functools.lru_cache(maxsize=256)
def _definition(source: str) -> ast.FunctionDef:
    tree = ast.parse(textwrap.dedent(source))
    fdef = tree.body[0]
    assert isinstance(fdef, ast.FunctionDef)
    return fdef


def _check_shape(b: Any, fdef: ast.FunctionDef, name: str) -> None:
    a = fdef.args
    if a.vararg or a.kwarg:
        raise b.error(KernelSyntaxError, f"helper `{name}` takes *args/**kwargs: not supported "
                      "in device code", hint="give it named parameters")
    for k, stmt in enumerate(fdef.body):
        for sub in ast.walk(stmt):
            if isinstance(sub, (ast.For, ast.While, ast.AsyncFor)):
                raise b.error(KernelSyntaxError, f"helper `{name}` contains a loop: only "
                              "straight-line helpers can be called from device code",
                              hint="write the loop in the kernel and call the helper inside it")
            if isinstance(sub, ast.Return) and (sub is not stmt or k != len(fdef.body) - 1):
                raise b.error(KernelSyntaxError, f"helper `{name}` returns before its last "
                              "statement", hint="compute both results and select with "
                              "torch.where, then return once at the end")


def inline_call(b: Any, fn: types.FunctionType, args: list[Any], kwargs: dict[str, Any],
                node: ast.AST) -> Any:
    """Trace ``fn(*args, **kwargs)`` into the kernel being built by ``b``; its return value.

    Example:
        >>> inline_call(builder, gelu_ish, [x_block], {}, call_node)  # doctest: +SKIP
    """
    name = fn.__name__
    if b.inline_depth >= MAX_DEPTH:
        raise b.error(KernelSyntaxError, f"helper calls nest deeper than {MAX_DEPTH} "
                      f"(recursion through `{name}`?)", hint="helpers cannot recurse")
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        raise b.error(KernelSyntaxError, f"cannot read the source of helper `{name}`",
                      hint="define it in a .py file (not a notebook cell or exec string)") from None
    fdef = _definition(source)
    _check_shape(b, fdef, name)
    b.parsed.inlined[f"{fn.__module__}.{fn.__qualname__}"] = source  # part of the cache key
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as exc:
        raise b.error(KernelTypeError, f"call of helper `{name}`: {exc}") from None
    bound.apply_defaults()
    closure = {}
    if fn.__closure__:
        closure = {v: c.cell_contents for v, c in zip(fn.__code__.co_freevars, fn.__closure__)}
    saved = (b.env, b.parsed.globals, b.captures, b.loop_locals)
    b.env = dict(bound.arguments)
    b.parsed.globals = collections.ChainMap(closure, fn.__globals__)
    b.captures, b.loop_locals = {}, {}
    b.inline_depth += 1
    try:
        body = fdef.body
        ret = body[-1] if body and isinstance(body[-1], ast.Return) else None
        for stmt in body[:-1] if ret is not None else body:
            b._statement(stmt)  # self.stmt stays the call site: locations point there
        return b.expr(ret.value) if ret is not None and ret.value is not None else None
    finally:
        b.env, b.parsed.globals, b.captures, b.loop_locals = saved
        b.inline_depth -= 1
