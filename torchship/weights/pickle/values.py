"""Values the pickle machine works with: placeholders for what it refuses to build
(:class:`Opaque`), records of what real unpickling would have run (:class:`Event`,
:class:`Trace`), the base of our own allowlisted constructors (:class:`Callable_`), and bounded
``repr`` helpers for error messages.

Example:
    >>> from torchship.weights.pickle.decoder import GlobalRef
    >>> Opaque(GlobalRef("os", "system", 0, "GLOBAL"), "call", ("id",)).describe()
    "os.system('id')"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torchship.weights.pickle.decoder import GlobalRef


@dataclass(eq=False)
class Opaque:
    """Stand-in for an object real pickle would have imported or built by running code.

    Example:
        >>> Opaque(GlobalRef("os", "system", 0, "GLOBAL")).describe()
        'os.system'
    """

    ref: GlobalRef
    action: str = "global"
    args: Any = None
    state: Any = None  # what BUILD would have handed to __setstate__ (kept as data)
    contents: list[Any] = field(default_factory=list)  # values SETITEM(S)/APPEND(S) would add

    def class_name(self) -> str:
        """The class this placeholder stands for: the global itself, or the class handed to
        ``copyreg._reconstructor`` / ``copyreg.__newobj__`` (how protocols 0-1 build objects).

        Example:
            >>> Opaque(GlobalRef("argparse", "Namespace", 0, "GLOBAL"), "instantiate").class_name()
            'argparse.Namespace'
        """
        if (self.ref.module == "copyreg" and isinstance(self.args, tuple) and self.args
                and isinstance(self.args[0], Opaque)):
            return self.args[0].ref.qualname
        return self.ref.qualname

    def describe(self) -> str:
        """Short text: the global, or the call that produced this value.

        Example:
            >>> Opaque(GlobalRef("os", "system", 0, "GLOBAL"), "call", ("id",)).describe()
            "os.system('id')"
        """
        if self.action == "global":
            return self.ref.qualname
        return f"{self.ref.qualname}{short_args(self.args)}"

    def __repr__(self) -> str:
        return f"<opaque {self.describe()}>"


@dataclass(frozen=True)
class Event:
    """Something real unpickling would have executed: ``action`` is call / instantiate /
    setstate / setitem / append / extension / persistent.

    Example:
        >>> Event(5, "REDUCE", "call", "os.system('id')", "os.system").offset
        5
    """

    offset: int
    opcode: str
    action: str
    description: str
    qualname: str


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters, safe on cycles and opaque values.

    Example:
        >>> short_repr("x" * 100, 10)
        "'xxxxxx..."
    """
    try:
        text = reprlib_repr(value)
    except Exception:  # a hostile structure should never break an error message
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reprlib_repr(value: Any) -> str:
    """A bounded repr (depth and length limited) used for error messages.

    Example:
        >>> reprlib_repr([1, [2, [3, [4, [5]]]]])
        '[1, [2, [3, [...]]]]'
    """
    import reprlib

    r = reprlib.Repr()
    r.maxlevel = 3
    r.maxstring = 60
    r.maxother = 60
    return r.repr(value)


def short_args(args: Any) -> str:
    """Render call arguments as ``(a, b)`` for messages.

    Example:
        >>> short_args(("ls", 1))
        "('ls', 1)"
    """
    if isinstance(args, tuple):
        inner = ", ".join(short_repr(a, 60) for a in args)
        return f"({inner})"
    return f"(*{short_repr(args, 60)})"


class Callable_:
    """Base of our own implementations of allowlisted globals (see ``allowlist.py``).

    ``call`` handles REDUCE, ``new`` handles NEWOBJ/NEWOBJ_EX/OBJ/INST.

    Example:
        >>> Callable_("x.y").qualname
        'x.y'
    """

    def __init__(self, qualname: str) -> None:
        self.qualname = qualname

    def call(self, args: tuple[Any, ...]) -> Any:
        """Build the value real pickle would get from ``qualname(*args)``. Example: see allowlist."""
        raise TypeError(f"{self.qualname} cannot be called")

    def new(self, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
        """Build the value for ``cls.__new__(cls, *args)``. Example: see allowlist."""
        if kwargs:
            raise TypeError(f"{self.qualname} takes no keyword arguments")
        return self.call(args)

    def __repr__(self) -> str:
        return f"<{self.qualname}>"


@dataclass
class Trace:
    """What one run saw: every global referenced and every code-running event.

    Example:
        >>> Trace().globals
        []
    """

    globals: list[tuple[GlobalRef, bool]] = field(default_factory=list)  # (ref, allowed)
    events: list[Event] = field(default_factory=list)
    protocol: int = 0
    end: int = 0


MAX_KEY_DEPTH = 100
MAX_KEY_ITEMS = 100_000


def check_hashable(value: Any) -> None:
    """Refuse a dict key / set item whose hash would recurse too deeply: CPython hashes nested
    tuples recursively in C without a depth check, so a stream nesting a million tuples would
    crash the process. Raises ValueError; walks iteratively.

    Example:
        >>> check_hashable((1, ("a", (2,))))
        >>> deep = None
        >>> for _ in range(200): deep = (deep,)
        >>> check_hashable(deep)
        Traceback (most recent call last):
        ...
        ValueError: a dict key or set item nests more than 100 tuples
    """
    if type(value) is not tuple:
        return  # str/bytes/int hash flat; frozensets cache their items' hashes
    stack = [(value, 1)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        if depth > MAX_KEY_DEPTH:
            raise ValueError(f"a dict key or set item nests more than {MAX_KEY_DEPTH} tuples")
        seen += len(item)
        if seen > MAX_KEY_ITEMS:
            raise ValueError(f"a dict key or set item holds more than {MAX_KEY_ITEMS} items")
        stack.extend((x, depth + 1) for x in item if type(x) is tuple)


def as_int(value: Any, what: str) -> int:
    """``value`` when it is a non-negative int (not a bool), else TypeError naming ``what``.

    Example:
        >>> as_int(3, "offset")
        3
    """
    if type(value) is not int or value < 0:
        raise TypeError(f"{what} must be a non-negative int, got {value!r}")
    return value


def int_tuple(value: Any, what: str) -> tuple[int, ...]:
    """A tuple or list of non-negative ints as a tuple, else TypeError naming ``what``.

    Example:
        >>> int_tuple([2, 3], "shape")
        (2, 3)
    """
    if not isinstance(value, tuple | list):
        raise TypeError(f"{what} must be a tuple of ints, got {type(value).__name__}")
    return tuple(as_int(v, what) for v in value)
