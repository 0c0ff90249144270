"""How a combine function of tuple inputs takes its operands: ``fn(left, right)`` with two
tuples, or flattened ``fn(*left, *right)`` when it names ``2 * n`` positional parameters
(Helion's ``def combine(left_values, left_indices, right_values, right_indices)``).

Example:
    >>> def flat(lv, li, rv, ri):
    ...     return lv + rv, ri
    >>> combine_args(flat, (1, 2), (3, 4))
    [1, 2, 3, 4]
    >>> combine_args(lambda a, b: a, (1, 2), (3, 4))
    [(1, 2), (3, 4)]
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["combine_args"]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _positional(fn: Callable[..., Any]) -> int | None:
    """The number of positional parameters of ``fn`` (None: unknown or ``*args``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in _POSITIONAL for p in params)


def combine_args(fn: Callable[..., Any], left: tuple[Any, ...],
                 right: tuple[Any, ...]) -> list[Any]:
    """The positional arguments to call ``fn`` with for the tuple operands ``left``, ``right``
    (see the module docstring)."""
    if len(left) > 1 and _positional(fn) == 2 * len(left):
        return [*left, *right]
    return [left, right]
