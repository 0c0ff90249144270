"""Our own pickle machine: decodes and interprets protocols 0-5 without running any code.

Nothing here calls ``pickle.load``, ``find_class`` or ``importlib``. A global named by the file
is handed to a ``resolve(module, name)`` callback (the allowlist), which returns one of our own
data-only implementations or ``None``; an unknown global becomes an :class:`Opaque` value, and
every place where real pickle would *run* something (REDUCE, INST, OBJ, NEWOBJ, NEWOBJ_EX,
BUILD via ``__setstate__``, SETITEM/APPEND on a foreign object, extension codes) is recorded as
an :class:`Event`. In ``strict`` mode (conversion) the first such call raises
:class:`PickleVMError` naming the global, the opcode offset and what it would have called; in
observe mode (the scanner) the machine keeps going so every reference is reported.

Memo, stack, mark nesting and output size are bounded (:class:`Limits`); FRAME lengths are
checked strictly (an opcode may not straddle a frame end, frames may not nest).

Example:
    >>> import pickle
    >>> Machine(pickle.dumps({"a": [1, 2.5, "x"]}, protocol=4)).run()
    {'a': [1, 2.5, 'x']}
"""

from __future__ import annotations

import codecs
import gc
import mmap
from collections.abc import Callable
from typing import Any

from torchship.weights.pickle.decoder import (
    HIGHEST_PROTOCOL,
    OPCODES,
    Decoder,
    GlobalRef,
    Limits,
    PickleVMError,
    _text,
    scan_globals_static,
)
from torchship.weights.pickle.values import (
    Callable_,
    Event,
    Opaque,
    Trace,
    check_hashable,
    short_args,
    short_repr,
)

__all__ = ["Callable_", "Decoder", "Event", "GlobalRef", "Limits", "Machine", "Opaque",
           "PickleVMError", "Trace", "scan_globals_static", "short_repr"]


# --------------------------------------------------------------------------- the machine

Resolver = Callable[[str, str], Any]
PersistentLoad = Callable[[Any, int], Any]


def _decode_str(raw: bytes) -> Any:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


class Machine:
    """Interprets one pickle stream (up to and including STOP) into plain data.

    ``resolve(module, name)`` returns our implementation of an allowlisted global or None;
    ``persistent_load(pid, offset)`` turns a persistent id into a value (torch storages);
    ``explain(qualname)`` may say why a known global is refused in strict mode (it replaces the
    generic "not on the allowlist" reason); ``skip(ref)`` True lets strict mode keep going past
    an object of that class (a placeholder that records its arguments and state; nothing runs).

    Example:
        >>> m = Machine(b"\\x80\\x02]q\\x00(K\\x01K\\x02e.")
        >>> m.run(), m.trace.protocol
        ([1, 2], 2)
    """

    def __init__(
        self,
        data: bytes | mmap.mmap | memoryview,
        *,
        resolve: Resolver | None = None,
        persistent_load: PersistentLoad | None = None,
        strict: bool = True,
        limits: Limits | None = None,
        source: str = "<pickle>",
        start: int = 0,
        explain: Callable[[str], str | None] | None = None,
        skip: Callable[[GlobalRef], bool] | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.decoder = Decoder(data, start, source, self.limits.max_bytes)
        self.resolve = resolve or (lambda module, name: None)
        self.explain = explain or (lambda qualname: None)
        self.persistent_load = persistent_load
        self.strict = strict
        self.skip = skip or (lambda ref: False)
        self.source = source
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.trace = Trace()
        self.bytes_built = 0
        self.items_built = 0
        self.offset = start
        self.opcode = ""

    # -- helpers
    def fail(self, message: str) -> PickleVMError:
        """Build an error at the current opcode. Example: ``raise m.fail('bad')``."""
        return PickleVMError(message, self.offset, self.source)

    def _push(self, value: Any) -> None:
        if len(self.stack) >= self.limits.max_stack:
            raise self.fail(f"stack exceeds {self.limits.max_stack} items")
        self.stack.append(value)

    def _pop(self) -> Any:
        if not self.stack:
            raise self.fail(f"{self.opcode} on an empty stack")
        return self.stack.pop()

    def _top(self) -> Any:
        if not self.stack:
            raise self.fail(f"{self.opcode} on an empty stack")
        return self.stack[-1]

    def _pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise self.fail(f"{self.opcode} without a MARK")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def _count(self, nbytes: int = 0, items: int = 0) -> None:
        self.bytes_built += nbytes
        self.items_built += items
        if self.bytes_built > self.limits.max_bytes:
            raise self.fail(f"stream builds more than {self.limits.max_bytes} bytes of data")
        if self.items_built > self.limits.max_items:
            raise self.fail(f"stream builds more than {self.limits.max_items} container items")

    def _event(self, action: str, target: Opaque | Any, description: str) -> None:
        qual = target.ref.qualname if isinstance(target, Opaque) else type(target).__name__
        event = Event(self.offset, self.opcode, action, description, qual)
        self.trace.events.append(event)
        if self.strict and not (isinstance(target, Opaque) and self.skip(target.ref)):
            ref = target.ref if isinstance(target, Opaque) else None
            why = self.explain(ref.qualname) if ref else None
            if ref and why:
                raise self.fail(f"cannot convert: {ref.qualname} (named at byte {ref.offset}) builds {why}")
            where = f"global {ref.qualname!r} (named at byte {ref.offset}, {ref.opcode})" if ref else "it"
            raise self.fail(f"refusing to run code: {self.opcode} would {description} — "
                            f"{where} is not on the allowlist of data-only constructors")

    def _global(self, module: Any, name: Any, opcode: str) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            raise self.fail(f"{opcode} needs two strings, got {short_repr(module)} and {short_repr(name)}")
        ref = GlobalRef(module, name, self.offset, opcode)
        impl = self.resolve(module, name)
        self.trace.globals.append((ref, impl is not None))
        return impl if impl is not None else Opaque(ref)

    def _call(self, func: Any, args: Any, action: str, kwargs: Any = None) -> Any:
        if not isinstance(args, tuple):
            if isinstance(func, Opaque):
                args = (args,)
            else:
                raise self.fail(f"{self.opcode} arguments must be a tuple, got {type(args).__name__}")
        if isinstance(func, Opaque):
            verb = "call" if action == "call" else "instantiate"
            kw = "" if not kwargs else f", **{short_repr(kwargs, 60)}"
            desc = f"{verb} {func.describe()}{short_args(args)[:-1]}{kw})"
            self._event(action, func, desc)
            return Opaque(func.ref, action, args)
        if isinstance(func, Callable_):
            if kwargs is not None and not isinstance(kwargs, dict):
                raise self.fail(f"{self.opcode} keyword arguments must be a dict")
            try:
                return func.call(args) if action == "call" else func.new(args, kwargs)
            except PickleVMError:
                raise
            except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
                raise self.fail(f"{func.qualname}{short_args(args)}: {exc}") from None
        raise self.fail(f"{self.opcode} on a non-callable {short_repr(func)}")

    # -- main loop
    def run(self) -> Any:
        """Execute up to STOP and return the value; ``trace.end`` is the offset after STOP.

        Example:
            >>> Machine(b"N.").run() is None
            True
        """
        d = self.decoder
        dispatch = {name: getattr(self, "_op_" + name) for name, _ in OPCODES.values()
                    if name != "STOP"}
        gc_was_enabled = gc.isenabled()
        gc.disable()  # many small objects, no cycles to collect mid-stream
        try:
            return self._loop(d, dispatch)
        finally:
            if gc_was_enabled:
                gc.enable()

    def _loop(self, d: Decoder, dispatch: dict[str, Callable[[Any], None]]) -> Any:
        while True:
            self.offset, self.opcode, arg = d.next()
            if self.opcode == "STOP":
                value = self._pop()
                if self.stack or self.metastack:
                    raise self.fail(f"STOP leaves {len(self.stack)} extra stack items and "
                                    f"{len(self.metastack)} open MARKs")
                if d.frame_end >= 0:
                    raise self.fail("STOP inside an unfinished FRAME")
                self.trace.end = d.pos
                unknown = [ref for ref, allowed in self.trace.globals
                           if not allowed and not self.skip(ref)]
                if self.strict and unknown:
                    ref = unknown[0]
                    raise PickleVMError(
                        f"refusing global {ref.qualname!r}: loading would import it "
                        f"({ref.opcode}); it is not on the allowlist", ref.offset, self.source)
                return value
            dispatch[self.opcode](arg)

    # -- opcodes (one method each; argument already decoded)
    def _op_PROTO(self, arg: int) -> None:
        if arg > HIGHEST_PROTOCOL:
            raise self.fail(f"unsupported pickle protocol {arg}")
        self.trace.protocol = arg

    def _op_FRAME(self, arg: int) -> None:
        pass

    def _op_MARK(self, arg: None) -> None:
        if len(self.metastack) >= self.limits.max_marks:
            raise self.fail(f"more than {self.limits.max_marks} nested MARKs")
        self.metastack.append(self.stack)
        self.stack = []

    def _op_POP(self, arg: None) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self._pop_mark()

    def _op_POP_MARK(self, arg: None) -> None:
        self._pop_mark()

    def _op_DUP(self, arg: None) -> None:
        self._push(self._top())

    def _op_NONE(self, arg: None) -> None:
        self._push(None)

    def _op_NEWTRUE(self, arg: None) -> None:
        self._push(True)

    def _op_NEWFALSE(self, arg: None) -> None:
        self._push(False)

    def _int_text(self, raw: bytes) -> int:
        text = raw.strip()
        if len(text) > self.limits.max_int_digits:
            raise self.fail(f"integer literal of {len(text)} digits")
        try:
            return int(text)
        except ValueError:
            raise self.fail(f"bad integer literal {short_repr(raw)}") from None

    def _op_INT(self, arg: bytes) -> None:
        if arg == b"00":
            self._push(False)
        elif arg == b"01":
            self._push(True)
        else:
            self._push(self._int_text(arg))

    def _op_LONG(self, arg: bytes) -> None:
        self._push(self._int_text(arg[:-1] if arg.endswith(b"L") else arg))

    def _op_BININT(self, arg: int) -> None:
        self._push(arg)

    _op_BININT1 = _op_BININT
    _op_BININT2 = _op_BININT

    def _long_bytes(self, raw: bytes) -> None:
        if len(raw) * 2.41 > self.limits.max_int_digits:
            raise self.fail(f"integer of {len(raw)} bytes")
        self._push(int.from_bytes(raw, "little", signed=True))

    _op_LONG1 = _long_bytes
    _op_LONG4 = _long_bytes

    def _op_FLOAT(self, arg: bytes) -> None:
        try:
            self._push(float(arg))
        except ValueError:
            raise self.fail(f"bad float literal {short_repr(arg)}") from None

    def _op_BINFLOAT(self, arg: float) -> None:
        self._push(arg)

    def _op_STRING(self, arg: bytes) -> None:
        if len(arg) < 2 or arg[:1] != arg[-1:] or arg[:1] not in (b"'", b'"'):
            raise self.fail("STRING argument is not a quoted literal")
        try:
            raw = codecs.escape_decode(arg[1:-1])[0]
        except ValueError as exc:
            raise self.fail(f"bad STRING escape: {exc}") from None
        self._count(len(raw))
        self._push(_decode_str(raw))

    def _binstring(self, arg: bytes) -> None:
        self._count(len(arg))
        self._push(_decode_str(arg))

    _op_BINSTRING = _binstring
    _op_SHORT_BINSTRING = _binstring

    def _op_UNICODE(self, arg: bytes) -> None:
        self._count(len(arg))
        try:
            self._push(arg.decode("raw-unicode-escape"))
        except UnicodeDecodeError as exc:
            raise self.fail(f"bad UNICODE literal: {exc}") from None

    def _binunicode(self, arg: bytes) -> None:
        self._count(len(arg))
        try:
            self._push(arg.decode("utf-8", "surrogatepass"))
        except UnicodeDecodeError as exc:
            raise self.fail(f"bad UTF-8 string: {exc}") from None

    _op_BINUNICODE = _binunicode
    _op_SHORT_BINUNICODE = _binunicode
    _op_BINUNICODE8 = _binunicode

    def _binbytes(self, arg: bytes) -> None:
        self._count(len(arg))
        self._push(arg)

    _op_BINBYTES = _binbytes
    _op_SHORT_BINBYTES = _binbytes
    _op_BINBYTES8 = _binbytes

    def _op_BYTEARRAY8(self, arg: bytes) -> None:
        self._count(len(arg))
        self._push(bytearray(arg))

    def _op_NEXT_BUFFER(self, arg: None) -> None:
        raise self.fail("NEXT_BUFFER needs out-of-band buffers, which a file cannot provide")

    def _op_READONLY_BUFFER(self, arg: None) -> None:
        if not isinstance(self._top(), bytes | bytearray):
            raise self.fail("READONLY_BUFFER on a non-buffer")

    def _op_EMPTY_TUPLE(self, arg: None) -> None:
        self._push(())

    def _op_TUPLE(self, arg: None) -> None:
        items = self._pop_mark()
        self._count(items=len(items))
        self._push(tuple(items))

    def _tuple_n(self, n: int) -> None:
        if len(self.stack) < n:
            raise self.fail(f"{self.opcode} needs {n} stack items")
        items = tuple(self.stack[-n:])
        del self.stack[-n:]
        self._count(items=n)
        self._push(items)

    def _op_TUPLE1(self, arg: None) -> None:
        self._tuple_n(1)

    def _op_TUPLE2(self, arg: None) -> None:
        self._tuple_n(2)

    def _op_TUPLE3(self, arg: None) -> None:
        self._tuple_n(3)

    def _op_EMPTY_LIST(self, arg: None) -> None:
        self._push([])

    def _op_LIST(self, arg: None) -> None:
        items = self._pop_mark()
        self._count(items=len(items))
        self._push(items)

    def _op_EMPTY_DICT(self, arg: None) -> None:
        self._push({})

    def _op_DICT(self, arg: None) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            raise self.fail("DICT with an odd number of items")
        out: dict[Any, Any] = {}
        self._setitems(out, items)
        self._push(out)

    def _op_EMPTY_SET(self, arg: None) -> None:
        self._push(set())

    def _op_FROZENSET(self, arg: None) -> None:
        items = self._pop_mark()
        self._count(items=len(items))
        try:
            for item in items:
                check_hashable(item)
            self._push(frozenset(items))
        except (TypeError, ValueError) as exc:
            raise self.fail(f"FROZENSET of unhashable items: {exc}") from None

    def _op_ADDITEMS(self, arg: None) -> None:
        items = self._pop_mark()
        target = self._top()
        if isinstance(target, Opaque):
            self._event("append", target, f"call {target.describe()}.add(...)")
            return
        if not isinstance(target, set):
            raise self.fail(f"ADDITEMS on a {type(target).__name__}, expected a set")
        self._count(items=len(items))
        try:
            for item in items:
                check_hashable(item)
            target.update(items)
        except (TypeError, ValueError) as exc:
            raise self.fail(f"ADDITEMS of unhashable items: {exc}") from None

    def _setitems(self, target: Any, items: list[Any]) -> None:
        if isinstance(target, Opaque):
            self._event("setitem", target, f"call {target.describe()}.__setitem__"
                        f"({short_repr(items[0]) if items else ''}, ...)")
            target.contents.extend(items[1::2])
            return
        if not isinstance(target, dict):
            raise self.fail(f"{self.opcode} on a {type(target).__name__}, expected a dict")
        self._count(items=len(items) // 2)
        try:
            for i in range(0, len(items), 2):
                check_hashable(items[i])
                target[items[i]] = items[i + 1]
        except (TypeError, ValueError) as exc:
            raise self.fail(f"unhashable dict key: {exc}") from None

    def _op_SETITEM(self, arg: None) -> None:
        value = self._pop()
        key = self._pop()
        self._setitems(self._top(), [key, value])

    def _op_SETITEMS(self, arg: None) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            raise self.fail("SETITEMS with an odd number of items")
        self._setitems(self._top(), items)

    def _appends(self, items: list[Any]) -> None:
        target = self._top()
        if isinstance(target, Opaque):
            self._event("append", target, f"call {target.describe()}.extend(...)")
            target.contents.extend(items)
            return
        if not isinstance(target, list):
            raise self.fail(f"{self.opcode} on a {type(target).__name__}, expected a list")
        self._count(items=len(items))
        target.extend(items)

    def _op_APPEND(self, arg: None) -> None:
        value = self._pop()
        self._appends([value])

    def _op_APPENDS(self, arg: None) -> None:
        self._appends(self._pop_mark())

    # memo
    def _memo_get(self, index: int) -> None:
        if index not in self.memo:
            raise self.fail(f"memo key {index} was never stored")
        self._push(self.memo[index])

    def _memo_put(self, index: int) -> None:
        if index < 0:
            raise self.fail(f"negative memo key {index}")
        if index not in self.memo and len(self.memo) >= self.limits.max_memo:
            raise self.fail(f"memo exceeds {self.limits.max_memo} entries")
        self.memo[index] = self._top()

    def _op_GET(self, arg: bytes) -> None:
        self._memo_get(self._int_text(arg))

    def _op_BINGET(self, arg: int) -> None:
        self._memo_get(arg)

    _op_LONG_BINGET = _op_BINGET

    def _op_PUT(self, arg: bytes) -> None:
        self._memo_put(self._int_text(arg))

    def _op_BINPUT(self, arg: int) -> None:
        self._memo_put(arg)

    _op_LONG_BINPUT = _op_BINPUT

    def _op_MEMOIZE(self, arg: None) -> None:
        self._memo_put(len(self.memo))

    # globals and calls
    def _op_GLOBAL(self, arg: tuple[bytes, bytes]) -> None:
        self._push(self._global(_text(arg[0]), _text(arg[1]), "GLOBAL"))

    def _op_STACK_GLOBAL(self, arg: None) -> None:
        name = self._pop()
        module = self._pop()
        self._push(self._global(module, name, "STACK_GLOBAL"))

    def _op_REDUCE(self, arg: None) -> None:
        args = self._pop()
        func = self._pop()
        self._push(self._call(func, args, "call"))

    def _op_NEWOBJ(self, arg: None) -> None:
        args = self._pop()
        cls = self._pop()
        self._push(self._call(cls, args, "instantiate"))

    def _op_NEWOBJ_EX(self, arg: None) -> None:
        kwargs = self._pop()
        args = self._pop()
        cls = self._pop()
        self._push(self._call(cls, args, "instantiate", kwargs))

    def _op_OBJ(self, arg: None) -> None:
        items = self._pop_mark()
        if not items:
            raise self.fail("OBJ without a class")
        self._push(self._call(items[0], tuple(items[1:]), "instantiate"))

    def _op_INST(self, arg: tuple[bytes, bytes]) -> None:
        cls = self._global(_text(arg[0]), _text(arg[1]), "INST")
        args = tuple(self._pop_mark())
        self._push(self._call(cls, args, "instantiate"))

    def _op_BUILD(self, arg: None) -> None:
        state = self._pop()
        target = self._top()
        if isinstance(target, Opaque):
            self._event("setstate", target,
                        f"call {target.describe()}.__setstate__({short_repr(state, 60)})")
            target.state = state
            return
        if hasattr(type(target), "setstate"):  # one of our own data objects
            try:
                target.setstate(state)
            except (TypeError, ValueError) as exc:
                raise self.fail(f"BUILD on {short_repr(target)}: {exc}") from None
            return
        if state is None or state == {}:
            return
        raise self.fail(f"BUILD with state {short_repr(state)} on a {type(target).__name__}")

    def _op_PERSID(self, arg: bytes) -> None:
        self._persistent(_text(arg))

    def _op_BINPERSID(self, arg: None) -> None:
        self._persistent(self._pop())

    def _persistent(self, pid: Any) -> None:
        if self.persistent_load is None:
            if self.strict:
                raise self.fail(f"persistent id {short_repr(pid)} but this container has none")
            self.trace.events.append(Event(self.offset, self.opcode, "persistent",
                                           f"persistent id {short_repr(pid)}", "persistent_load"))
            self._push(Opaque(GlobalRef("<persistent>", "load", self.offset, self.opcode),
                              "call", (pid,)))
            return
        self._push(self.persistent_load(pid, self.offset))

    def _ext(self, code: int) -> None:
        target = Opaque(GlobalRef("copyreg", f"extension[{code}]", self.offset, self.opcode))
        self.trace.globals.append((target.ref, False))
        self._event("extension", target,
                    f"look up extension code {code} in the copyreg registry (any global)")
        self._push(target)

    _op_EXT1 = _ext
    _op_EXT2 = _ext
    _op_EXT4 = _ext
