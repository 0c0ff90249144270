"""Pickle opcode decoding: the opcode table, FRAME-checked argument reading, error and limit
types, and a static (non-executing) scan for global names.

The interpreter that gives opcodes meaning is :mod:`torchship.weights.pickle.vm`; this module
only turns bytes into ``(offset, opcode name, argument)`` triples, enforcing that every
argument lies inside the stream and inside its FRAME.

Example:
    >>> d = Decoder(b"\\x80\\x02K\\x07.")
    >>> [d.next()[1:] for _ in range(3)]
    [('PROTO', 2), ('BININT1', 7), ('STOP', None)]
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from typing import Any

HIGHEST_PROTOCOL = 5


class PickleVMError(ValueError):
    """The stream is malformed, exceeds a limit, or would run code (the message says which).

    Example:
        >>> try:
        ...     _ = Decoder(b"N\\xff", start=1).next()
        ... except PickleVMError as exc:
        ...     print(exc.offset, exc.detail)
        1 unknown opcode byte 0xff
    """

    def __init__(self, message: str, offset: int = -1, source: str = "<pickle>") -> None:
        self.offset = offset
        self.source = source
        self.detail = message
        where = f"{source}, opcode at byte {offset}" if offset >= 0 else source
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Limits:
    """Bounds on what one pickle stream may build.

    Example:
        >>> Limits(max_stack=10).max_stack
        10
    """

    max_stack: int = 1 << 22
    max_memo: int = 1 << 22
    max_marks: int = 4096
    max_bytes: int = 1 << 30  # str/bytes payload built by the stream
    max_items: int = 1 << 24  # container items added by the stream
    max_int_digits: int = 4096


@dataclass(frozen=True)
class GlobalRef:
    """A global named by the stream (``module.name``) and where.

    Example:
        >>> GlobalRef("os", "system", 3, "GLOBAL").qualname
        'os.system'
    """

    module: str
    name: str
    offset: int
    opcode: str

    @property
    def qualname(self) -> str:
        """Dotted name. Example: ``GlobalRef('a', 'b', 0, 'GLOBAL').qualname == 'a.b'``."""
        return f"{self.module}.{self.name}"


# opcode byte -> (name, argument kind). Argument kinds are decoded by Decoder.read_arg.
OPCODES: dict[int, tuple[str, str]] = {
    ord("("): ("MARK", ""), ord("."): ("STOP", ""), ord("0"): ("POP", ""),
    ord("1"): ("POP_MARK", ""), ord("2"): ("DUP", ""), ord("F"): ("FLOAT", "line"),
    ord("I"): ("INT", "line"), ord("J"): ("BININT", "i4"), ord("K"): ("BININT1", "u1"),
    ord("L"): ("LONG", "line"), ord("M"): ("BININT2", "u2"), ord("N"): ("NONE", ""),
    ord("P"): ("PERSID", "line"), ord("Q"): ("BINPERSID", ""), ord("R"): ("REDUCE", ""),
    ord("S"): ("STRING", "line"), ord("T"): ("BINSTRING", "b4s"),
    ord("U"): ("SHORT_BINSTRING", "b1"), ord("V"): ("UNICODE", "line"),
    ord("X"): ("BINUNICODE", "b4"), ord("a"): ("APPEND", ""), ord("b"): ("BUILD", ""),
    ord("c"): ("GLOBAL", "line2"), ord("d"): ("DICT", ""), ord("}"): ("EMPTY_DICT", ""),
    ord("e"): ("APPENDS", ""), ord("g"): ("GET", "line"), ord("h"): ("BINGET", "u1"),
    ord("i"): ("INST", "line2"), ord("j"): ("LONG_BINGET", "u4"), ord("l"): ("LIST", ""),
    ord("]"): ("EMPTY_LIST", ""), ord("o"): ("OBJ", ""), ord("p"): ("PUT", "line"),
    ord("q"): ("BINPUT", "u1"), ord("r"): ("LONG_BINPUT", "u4"), ord("s"): ("SETITEM", ""),
    ord("t"): ("TUPLE", ""), ord(")"): ("EMPTY_TUPLE", ""), ord("u"): ("SETITEMS", ""),
    ord("G"): ("BINFLOAT", "f8"),
    0x80: ("PROTO", "u1"), 0x81: ("NEWOBJ", ""), 0x82: ("EXT1", "u1"), 0x83: ("EXT2", "u2"),
    0x84: ("EXT4", "i4"), 0x85: ("TUPLE1", ""), 0x86: ("TUPLE2", ""), 0x87: ("TUPLE3", ""),
    0x88: ("NEWTRUE", ""), 0x89: ("NEWFALSE", ""), 0x8A: ("LONG1", "b1"), 0x8B: ("LONG4", "b4s"),
    ord("B"): ("BINBYTES", "b4"), ord("C"): ("SHORT_BINBYTES", "b1"),
    0x8C: ("SHORT_BINUNICODE", "b1"), 0x8D: ("BINUNICODE8", "b8"), 0x8E: ("BINBYTES8", "b8"),
    0x8F: ("EMPTY_SET", ""), 0x90: ("ADDITEMS", ""), 0x91: ("FROZENSET", ""),
    0x92: ("NEWOBJ_EX", ""), 0x93: ("STACK_GLOBAL", ""), 0x94: ("MEMOIZE", ""),
    0x95: ("FRAME", "u8"), 0x96: ("BYTEARRAY8", "b8"), 0x97: ("NEXT_BUFFER", ""),
    0x98: ("READONLY_BUFFER", ""),
}

_STRUCTS = {"u1": struct.Struct("<B"), "u2": struct.Struct("<H"), "i4": struct.Struct("<i"),
            "u4": struct.Struct("<I"), "u8": struct.Struct("<Q"), "f8": struct.Struct(">d")}


class Decoder:
    """Reads opcodes and their arguments from a buffer, enforcing FRAME boundaries.

    Example:
        >>> d = Decoder(b"K\\x07.")
        >>> d.next()[1:], d.next()[1:]
        (('BININT1', 7), ('STOP', None))
    """

    def __init__(self, data: bytes | mmap.mmap | memoryview, start: int = 0, source: str = "<pickle>",
                 max_bytes: int = 1 << 30) -> None:
        # bytes or mmap (both slice to bytes and have .find); anything else is copied once
        self.data = data if isinstance(data, bytes | mmap.mmap) else bytes(data)
        self.pos = start
        self.end = len(self.data)
        self.frame_end = -1  # -1: not inside a frame
        self.source = source
        self.max_bytes = max_bytes

    def _fail(self, message: str, offset: int) -> PickleVMError:
        return PickleVMError(message, offset, self.source)

    def next(self) -> tuple[int, str, Any]:
        """Decode one opcode: returns (offset, name, argument).

        Example:
            >>> Decoder(b"J\\x01\\x00\\x00\\x00").next()
            (0, 'BININT', 1)
        """
        offset = pos = self.pos
        data = self.data
        frame_end = self.frame_end
        if pos >= self.end:
            raise self._fail("stream ends without STOP", offset)
        spec = _TABLE[data[pos]]
        if spec is None:
            raise self._fail(f"unknown opcode byte 0x{data[pos]:02x}", offset)
        name, kind, fixed = spec
        pos += 1
        if kind == 0:  # no argument
            arg: Any = None
        elif kind == 1:  # fixed-size number
            stop = pos + fixed.size
            self._bounds(stop, frame_end, offset)
            arg = fixed.unpack_from(data, pos)[0]
            pos = stop
        elif kind == 2:  # length-prefixed bytes
            stop = pos + fixed.size
            self._bounds(stop, frame_end, offset)
            n = fixed.unpack_from(data, pos)[0]
            if n < 0:
                raise self._fail(f"negative length {n}", offset)
            if n > self.max_bytes:
                raise self._fail(f"{name} of {n} bytes exceeds the limit of {self.max_bytes}",
                                 offset)
            self._bounds(stop + n, frame_end, offset)
            arg = data[stop:stop + n]
            pos = stop + n
        else:  # one or two text lines
            arg, pos = self._lines(pos, kind - 2, frame_end, offset)
            if kind == 3:
                arg = arg[0]
        if pos == frame_end:
            frame_end = -1
        if name == "FRAME":
            if frame_end >= 0:
                raise self._fail("FRAME starts before the previous frame ended", offset)
            if arg > self.end - pos:
                raise self._fail(f"FRAME of {arg} bytes runs past the end of the stream "
                                 f"({self.end - pos} left)", offset)
            if arg:
                frame_end = pos + arg
        self.pos = pos
        self.frame_end = frame_end
        return offset, name, arg

    def _bounds(self, stop: int, frame_end: int, offset: int) -> None:
        if stop > self.end:
            raise self._fail(f"stream ends inside an opcode (needs {stop - self.end} more bytes)",
                             offset)
        if frame_end >= 0 and stop > frame_end:
            raise self._fail(f"opcode crosses the end of its FRAME at byte {frame_end}", offset)

    def _lines(self, pos: int, count: int, frame_end: int, offset: int) -> tuple[tuple[bytes, ...], int]:
        limit = self.end if frame_end < 0 else frame_end
        out = []
        for _ in range(count):
            nl = self.data.find(b"\n", pos, limit)
            if nl < 0:
                raise self._fail("text argument is not terminated by a newline", offset)
            out.append(self.data[pos:nl])
            pos = nl + 1
        return tuple(out), pos


def _build_table() -> list[tuple[str, int, Any] | None]:
    table: list[tuple[str, int, Any] | None] = [None] * 256
    lengths = {"b1": struct.Struct("<B"), "b4": struct.Struct("<I"), "b4s": struct.Struct("<i"),
               "b8": struct.Struct("<Q")}
    for code, (name, kind) in OPCODES.items():
        if not kind:
            table[code] = (name, 0, None)
        elif kind in _STRUCTS:
            table[code] = (name, 1, _STRUCTS[kind])
        elif kind in lengths:
            table[code] = (name, 2, lengths[kind])
        else:
            table[code] = (name, 3 if kind == "line" else 4, None)
    return table


_TABLE = _build_table()


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")



def scan_globals_static(data: bytes | mmap.mmap | memoryview, start: int, source: str = "<pickle>"
                        ) -> tuple[list[GlobalRef], int, str | None]:
    """Decode opcodes from ``start`` without executing, collecting GLOBAL/INST names (used by
    the scanner on the part of a stream that follows an error). Returns (refs, position, error).

    Example:
        >>> refs, pos, err = scan_globals_static(b"cos\\nsystem\\n.", 0)
        >>> refs[0].qualname, err
        ('os.system', None)
    """
    d = Decoder(data, start, source)
    refs: list[GlobalRef] = []
    while True:
        try:
            offset, name, arg = d.next()
        except PickleVMError as exc:
            return refs, d.pos, exc.detail
        if name in ("GLOBAL", "INST"):
            refs.append(GlobalRef(_text(arg[0]), _text(arg[1]), offset, name))
        elif name == "STACK_GLOBAL":
            refs.append(GlobalRef("<unknown>", "<built at run time>", offset, name))
        elif name == "STOP":
            return refs, d.pos, None
