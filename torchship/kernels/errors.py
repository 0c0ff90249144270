"""Errors raised by the torchship.kernels compiler.

Every error names where it happened (file and line of the user's kernel, when known), the
construct, and what to write instead.

Example:
    >>> err = KernelSyntaxError("`while` loops are not supported in device code",
    ...                         filename="k.py", lineno=3, source_line="while x:",
    ...                         hint="use `for t in ts.tile(n)`")
    >>> print(err)
    k.py:3: `while` loops are not supported in device code
        while x:
      hint: use `for t in ts.tile(n)`
"""

from __future__ import annotations

__all__ = [
    "KernelConfigError",
    "KernelError",
    "KernelLaunchError",
    "KernelSyntaxError",
    "KernelTypeError",
]


class KernelError(Exception):
    """Base class: something in a kernel cannot be compiled or run.

    Example:
        >>> str(KernelError("bad", filename="a.py", lineno=1))
        'a.py:1: bad'
    """

    def __init__(
        self,
        message: str,
        *,
        filename: str | None = None,
        lineno: int | None = None,
        source_line: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.filename = filename
        self.lineno = lineno
        self.source_line = source_line
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.filename is not None:
            where = f"{self.filename}:{self.lineno}: " if self.lineno else f"{self.filename}: "
        text = where + self.message
        if self.source_line:
            text += f"\n    {self.source_line.strip()}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def __reduce__(self) -> tuple[object, ...]:
        # keep the keyword-only fields when pickled across autotune worker processes
        return (
            _rebuild,
            (type(self), self.message, self.filename, self.lineno, self.source_line, self.hint),
        )


def _rebuild(
    cls: type[KernelError],
    message: str,
    filename: str | None,
    lineno: int | None,
    source_line: str | None,
    hint: str | None,
) -> KernelError:
    return cls(message, filename=filename, lineno=lineno, source_line=source_line, hint=hint)


class KernelSyntaxError(KernelError):
    """A Python construct the tile language does not support (``while``, ``try``, ...)."""


class KernelTypeError(KernelError):
    """Shapes or dtypes that do not fit (a carried value changing dtype, mismatched tiles)."""


class KernelConfigError(KernelError):
    """A Config that is not valid for a kernel (names the bad knob)."""


class KernelLaunchError(KernelError):
    """Arguments that do not fit the compiled kernel at call time."""
