"""The crash-isolating benchmark harness.

Candidates are compiled in parallel worker processes (``spawn`` context, one timeout each) and
then checked and timed, one at a time, in a persistent benchmark worker. A worker that dies
(``os._exit``, a segfault, an illegal memory access that poisons the CUDA context) or runs past
its timeout is killed and restarted; only the candidate it was running is lost and recorded
as ``crash`` / ``timeout``. Every candidate's output (and every argument it may have written)
is compared with the reference (the default config, or the ref mode) before it is timed; a
mismatch is recorded as ``wrong`` and can never win.

With ``isolate=False`` (or a target that cannot be re-imported) everything runs in this
process: same checks, no crash isolation.

Example:
    >>> from torchship.kernels.autotune.target import LocalTarget
    >>> Harness(LocalTarget(None, ()), isolate=False).isolate
    False
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import pickle
import threading
import time
import traceback
from collections import deque
from multiprocessing.connection import wait
from typing import Any

from torchship.kernels.autotune.records import Result
from torchship.kernels.autotune.target import (
    Target,
    call_bound,
    clone_args,
    compare_outputs,
    poison_like,
)
from torchship.kernels.autotune.timing import Timer, default_timer


class HarnessError(RuntimeError):
    """The harness cannot run at all (the target does not build, the reference fails)."""


def _sync(device_type: str) -> None:
    if device_type == "cuda":
        import torch

        torch.cuda.synchronize()


def _is_compile_error(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return any("Compil" in n or "KernelConfigError" in n for n in names)


class _State:
    """What a worker holds: the built target, the reference output, the timer."""

    def __init__(self, target: Target, timer: Timer | None, role: str) -> None:
        self.target = target
        t0 = time.perf_counter()
        try:
            self.bound, self.args, self.kwargs = target.build()
        except Exception as exc:
            raise HarnessError(f"cannot build the tuning target: {exc}") from exc
        self.timings = {"build_s": time.perf_counter() - t0}
        self.device_type = getattr(target, "device_type", "cpu")
        self.timer = timer or default_timer(self.device_type)
        self.role = role
        self.ref_out: Any = None
        self.ref_args: Any = None
        if role == "bench":
            try:
                ref_args = clone_args(self.args)
                ref_kwargs = clone_args(self.kwargs)
                t1 = time.perf_counter()
                self.ref_out = target.reference(self.bound, ref_args, ref_kwargs)
                _sync(self.device_type)
                self.timings["reference_s"] = time.perf_counter() - t1
                self.ref_args = (ref_args, ref_kwargs)
            except Exception as exc:
                raise HarnessError(
                    f"the reference run failed, so no candidate can be checked: {exc}"
                ) from exc
            self.timer.prepare(self._device())
        self.hot_timer = self.timer.sustained() if hasattr(self.timer, "sustained") else self.timer

    def _device(self) -> Any:
        import torch

        for a in list(self.args) + list(self.kwargs.values()):
            if isinstance(a, torch.Tensor):
                return a.device
        return "cpu"

    def compile(self, config: Any) -> dict[str, Any]:
        """Compile and launch once (the launch triggers Triton's JIT and fills its disk cache).

        A compile worker launches on its own arguments, not copies: it never checks values,
        and copies would double its device memory."""
        t0 = time.perf_counter()
        try:
            fn = self.bound.compile(config)
        except Exception as exc:
            return {"status": "compile_error", "error": _format(exc)}
        try:
            if self.role == "bench":  # its arguments may be the caller's own (in-process, IPC)
                call_bound(self.bound, fn, clone_args(self.args), clone_args(self.kwargs))
            else:
                call_bound(self.bound, fn, self.args, self.kwargs)
            _sync(self.device_type)
        except Exception as exc:
            status = "compile_error" if _is_compile_error(exc) else "runtime_error"
            return {"status": status, "error": _format(exc)}
        return {"status": "ok", "compile_s": time.perf_counter() - t0}

    def bench(self, config: Any, sustained: bool = False) -> dict[str, Any]:
        """Compile (cache hit when pre-compiled), check against the reference, then time
        (with the timer's sustained-load variant when ``sustained``)."""
        t0 = time.perf_counter()
        try:
            fn = self.bound.compile(config)
        except Exception as exc:
            return {"status": "compile_error", "error": _format(exc)}
        args, kwargs = clone_args(self.args), clone_args(self.kwargs)
        try:
            poison_like(self.ref_out)
            out = call_bound(self.bound, fn, args, kwargs)
            _sync(self.device_type)
        except Exception as exc:
            status = "compile_error" if _is_compile_error(exc) else "runtime_error"
            return {"status": status, "error": _format(exc)}
        compile_s = time.perf_counter() - t0
        why = compare_outputs(out, self.ref_out)
        if why is None:
            why = compare_outputs((args, kwargs), self.ref_args, name="args")
        if why is not None:
            return {"status": "wrong", "error": why, "compile_s": compile_s}
        t1 = time.perf_counter()
        try:
            timer = self.hot_timer if sustained else self.timer
            ms = timer.measure(lambda: call_bound(self.bound, fn, args, kwargs), config)
        except Exception as exc:
            return {"status": "runtime_error", "error": _format(exc)}
        return {
            "status": "ok",
            "time_ms": float(ms),
            "compile_s": compile_s,
            "bench_s": time.perf_counter() - t1,
            "sustained": sustained and timer is not self.timer,
        }


def _format(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[-4000:]


#: error texts after which a CUDA context cannot be used again
_FATAL = ("illegal memory access", "unspecified launch failure", "misaligned address",
          "device-side assert", "illegal instruction", "CUDA error: an illegal",
          "cudaErrorLaunchFailure", "CUDA_ERROR_ILLEGAL")


def _poisons_device(error: str) -> bool:
    """True when ``error`` says the device context is corrupted (the worker must restart).

    Example:
        >>> _poisons_device("RuntimeError: CUDA error: an illegal memory access was encountered")
        True
    """
    return any(s in error for s in _FATAL)


def _worker_main(conn: Any) -> None:
    """Loop of a worker process: ('setup', bytes, timer, role) then ('compile'|'bench', cfg)."""
    state: _State | None = None
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        op = msg[0]
        try:
            if op == "exit":
                return
            if op == "warm":  # pay imports and device init ahead of the first target
                import torch
                import triton  # noqa: F401

                import torchship.kernels  # noqa: F401

                if msg[1] == "cuda":
                    torch.empty(1, device="cuda")
                conn.send(("ok", {"pid": os.getpid()}))
            elif op == "setup":
                t0 = time.perf_counter()
                target = pickle.loads(msg[1])
                load_s = time.perf_counter() - t0
                state = _State(target, msg[2], msg[3])
                conn.send(("ok", {"pid": os.getpid(), "load_s": load_s, **state.timings}))
            elif op in ("compile", "bench"):
                assert state is not None, "worker used before setup"
                result = getattr(state, op)(*msg[1:])
                conn.send(("ok", result))
                if _poisons_device(result.get("error", "")):
                    # the CUDA context is unusable after this: die, the parent restarts us
                    conn.close()
                    os._exit(3)
            else:
                conn.send(("error", f"unknown op {op!r}"))
        except Exception as exc:
            conn.send(("error", _format(exc) + "\n" + traceback.format_exc()[-3000:]))


class _Worker:
    """A restartable spawn-context worker process with a pipe."""

    def __init__(self, payload: bytes, timer: Timer | None, role: str, setup_timeout: float):
        self.payload, self.timer, self.role, self.setup_timeout = payload, timer, role, setup_timeout
        self.proc: Any = None
        self.conn: Any = None
        self.restarts = -1
        self.pending = False
        self.setup_info: dict[str, float] = {}  # seconds of the last setup, as the worker saw them

    def spawn(self) -> None:
        """Start the process (no setup yet)."""
        self.kill()
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        self.restarts += 1

    def begin(self, payload: bytes | None = None, timer: Timer | None = None) -> None:
        """Start the process if needed and send it the setup message (no waiting)."""
        if payload is not None:
            self.payload, self.timer = payload, timer
        if self.proc is None or not self.proc.is_alive():
            self.spawn()
        self.conn.send(("setup", self.payload, self.timer, self.role))
        self.pending = True

    def finish(self) -> None:
        """Wait for the answer to :meth:`begin`; HarnessError when setup failed."""
        if not self.pending:
            return
        self.pending = False
        t0 = time.perf_counter()
        status, data = self.wait_reply(self.setup_timeout)
        if status != "ok":
            self.kill()
            raise HarnessError(f"{self.role} worker failed to start: {data}")
        self.setup_info = {k: round(v, 3) for k, v in data.items() if k.endswith("_s")}
        self.setup_info["waited_s"] = round(time.perf_counter() - t0, 3)

    def ensure(self) -> None:
        """A live, set-up worker (restarted after a crash)."""
        if self.proc is not None and self.proc.is_alive() and not self.pending:
            return
        if not self.pending:
            self.begin()
        self.finish()

    def wait_reply(self, timeout: float) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                return "timeout", f"no answer within {timeout:g} s (worker killed)"
            ready = wait([self.conn, self.proc.sentinel], timeout=min(left, 1.0))
            if self.conn in ready or self.conn.poll():
                try:
                    return self.conn.recv()
                except (EOFError, OSError):
                    pass
            if not self.proc.is_alive() or (ready and self.conn not in ready):
                self.proc.join(1)
                code = self.proc.exitcode
                self.kill()
                return "crash", f"worker process died (exit code {code})"

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(5)
        if self.conn is not None:
            self.conn.close()
        self.proc = self.conn = None

    def close(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            try:
                self.conn.send(("exit",))
                self.proc.join(2)
            except (OSError, BrokenPipeError):
                pass
        self.kill()


#: live workers kept between Harness instances (``keep_workers=True``), by role
_IDLE: dict[str, list[_Worker]] = {}


def shutdown_workers() -> None:
    """Stop every kept worker process.

    Example:
        >>> shutdown_workers()
    """
    for pool in _IDLE.values():
        while pool:
            pool.pop().close()


atexit.register(shutdown_workers)


def prewarm(compile_workers: int | None = None, device_type: str = "cuda",
            timeout_s: float = 300.0) -> float:
    """Start the worker processes of later ``keep_workers=True`` runs now (imports, device
    init) so that tuning time is spent tuning; returns the seconds it took.

    Example:
        >>> # prewarm(8, "cuda")  -> e.g. 9.5; then autotune(..., keep_workers=True)
    """
    t0 = time.perf_counter()
    if compile_workers is None:
        compile_workers = min(8, max(1, (os.cpu_count() or 2) - 1)) if device_type == "cuda" else 0
    workers = [_Worker(b"", None, "bench", timeout_s)]
    workers += [_Worker(b"", None, "compile", timeout_s) for _ in range(compile_workers)]
    for w in workers:
        w.spawn()
        w.conn.send(("warm", device_type))
    for w in workers:
        status, data = w.wait_reply(timeout_s)
        if status != "ok":
            w.kill()
            raise HarnessError(f"worker failed to start: {data}")
        _IDLE.setdefault(w.role, []).append(w)
    return time.perf_counter() - t0


class Harness:
    """Evaluate candidate configs of a target with compile workers and a benchmark worker.

    ``compile_workers=None`` uses ``min(8, cpus - 1)`` on a GPU and none on CPU (where the
    Triton interpreter has nothing to compile ahead); pass a number to force it.

    Example:
        >>> from torchship.kernels.autotune.target import LocalTarget
        >>> h = Harness(LocalTarget(None, ()), isolate=False)
        >>> h.compile_workers
        0
    """

    def __init__(
        self,
        target: Target,
        *,
        timer: Timer | None = None,
        isolate: bool = True,
        compile_workers: int | None = None,
        compile_timeout_s: float = 120.0,
        bench_timeout_s: float = 60.0,
        setup_timeout_s: float = 300.0,
        keep_workers: bool = False,
    ) -> None:
        self.keep_workers = keep_workers
        self.target = target
        self.timer = timer
        self.isolate = bool(isolate and target.isolatable)
        device_type = getattr(target, "device_type", "cpu")
        if compile_workers is None:
            compile_workers = min(8, max(1, (os.cpu_count() or 2) - 1)) if device_type == "cuda" else 0
        self.compile_workers = compile_workers if self.isolate else 0
        self.compile_timeout_s, self.bench_timeout_s = compile_timeout_s, bench_timeout_s
        self.setup_timeout_s = setup_timeout_s
        self._local: _State | None = None
        self._bench: _Worker | None = None
        self._compilers: list[_Worker] = []
        self.crashes = 0
        self.compile_times: list[float] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Harness:
        """Start the workers (or build the target in-process); raises HarnessError if it can't."""
        if not self.isolate:
            self._local = _State(self.target, self.timer, "bench")
            return self
        payload = self.target.payload()
        light = pickle.dumps(self.target.light()) if self.compile_workers else payload
        self._bench = self._take("bench")
        self._compilers = [self._take("compile") for _ in range(self.compile_workers)]
        workers = [self._bench, *self._compilers]
        # all set up in parallel: every process boots first (a send outgrowing the pipe blocks
        # until its child has booted), the bench payload goes from a thread beside the others
        for w in workers:
            w.setup_timeout = self.setup_timeout_s
            if w.proc is None or not w.proc.is_alive():
                w.spawn()
        sender = threading.Thread(target=self._bench.begin, args=(payload, self.timer), daemon=True)
        sender.start()
        for w in self._compilers:
            w.begin(light, None)
        sender.join()
        errors = []
        for w in workers:
            try:
                w.finish()
            except HarnessError as exc:
                errors.append((w, exc))
        bench_errors = [exc for w, exc in errors if w is self._bench]
        if bench_errors or (errors and len(errors) == len(self._compilers)):
            self.close()
            raise (bench_errors or [errors[0][1]])[0]
        return self

    def _take(self, role: str) -> _Worker:
        pool = _IDLE.get(role, []) if self.keep_workers else []
        while pool:
            w = pool.pop()
            if w.proc is not None and w.proc.is_alive():
                return w
            w.kill()
        return _Worker(b"", None, role, self.setup_timeout_s)

    def setup_info(self) -> dict[str, float]:
        """Bench worker setup seconds: ``load_s`` (unpickle), ``build_s`` (arguments),
        ``reference_s``, ``waited_s`` (the parent's wait); empty when tuning in-process."""
        return dict(self._bench.setup_info) if self._bench is not None else {}

    def close(self) -> None:
        """Stop every worker (or keep them for the next Harness when ``keep_workers``)."""
        for w in [self._bench, *self._compilers]:
            if w is None:
                continue
            if self.keep_workers and w.proc is not None and w.proc.is_alive():
                _IDLE.setdefault(w.role, []).append(w)
            else:
                w.close()
        self._compilers, self._bench = [], None

    def __enter__(self) -> Harness:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self, configs: list[Any], sustained: bool = False) -> list[Result]:
        """Compile (in parallel) then check and time each config; one Result per config.
        ``sustained`` times with the timer's sustained-load variant (``Result.sustained``).

        Example:
            >>> # see tests/kernels/test_autotune_harness.py for real runs
        """
        results = [Result(config=c, status="skipped") for c in configs]
        todo = list(range(len(configs)))
        if self.isolate and self._compilers and len(configs) > 0:
            compiled = self._compile_parallel(configs)
            todo = []
            for i, res in enumerate(compiled):
                if res.get("status") == "ok":
                    results[i].compile_s = res.get("compile_s")
                    todo.append(i)
                else:
                    results[i].status = res.get("status", "compile_error")
                    results[i].error = str(res.get("error", ""))
        for i in todo:
            res = self._bench_one(configs[i], sustained)
            r = results[i]
            r.sustained = bool(res.get("sustained"))
            r.status = res.get("status", "runtime_error")
            r.error = str(res.get("error", ""))
            r.time_ms = res.get("time_ms")
            r.bench_s = res.get("bench_s")
            if r.compile_s is None:
                r.compile_s = res.get("compile_s")
        return results

    def current_compile_timeout(self) -> float:
        """Adaptive per-candidate compile timeout: once 4 compiles succeeded, at most
        ``max(5 s, 4 x the 90th percentile)`` of them, so one hung compile cannot stall a
        batch for the whole configured timeout.

        Example:
            >>> from torchship.kernels.autotune.target import LocalTarget
            >>> h = Harness(LocalTarget(None, ()), isolate=False, compile_timeout_s=60)
            >>> h.compile_times = [1.0, 1.2, 0.8, 1.1]; h.current_compile_timeout()
            5.0
        """
        if len(self.compile_times) < 4:
            return self.compile_timeout_s
        ordered = sorted(self.compile_times)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        return min(self.compile_timeout_s, max(5.0, 4.0 * p90))

    def _bench_one(self, config: Any, sustained: bool = False) -> dict[str, Any]:
        if not self.isolate:
            assert self._local is not None, "call start() first"
            return self._local.bench(config, sustained)
        assert self._bench is not None, "call start() first"
        self._bench.ensure()
        self._bench.conn.send(("bench", config, sustained))
        status, data = self._bench.wait_reply(self.bench_timeout_s)
        if status == "ok":
            if _poisons_device(str(data.get("error", ""))):
                self._bench.kill()  # it is exiting; restart it before the next candidate
            return data
        if status in ("crash", "timeout"):
            self.crashes += 1
            return {"status": status, "error": data}
        return {"status": "runtime_error", "error": data}

    def _compile_parallel(self, configs: list[Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{} for _ in configs]
        queue = deque(range(len(configs)))
        busy: dict[int, tuple[_Worker, float]] = {}
        started: dict[int, float] = {}
        idle = list(self._compilers)
        while queue or busy:
            while queue and idle:
                w = idle.pop()
                i = queue.popleft()
                try:
                    w.ensure()
                except HarnessError as exc:
                    out[i] = {"status": "crash", "error": str(exc)}
                    idle.append(w)
                    continue
                w.conn.send(("compile", configs[i]))
                started[i] = time.monotonic()
                busy[i] = (w, started[i])
            if not busy:
                continue
            waitables = []
            for w, _ in busy.values():
                waitables += [w.conn, w.proc.sentinel]
            wait(waitables, timeout=0.5)
            for i in list(busy):
                w, _ = busy[i]
                reply = None
                if w.conn.poll():
                    try:
                        reply = w.conn.recv()
                    except (EOFError, OSError):
                        reply = None
                if reply is not None:
                    status, data = reply
                    out[i] = data if status == "ok" else {"status": "runtime_error", "error": data}
                    if out[i].get("status") == "ok" and out[i].get("compile_s") is not None:
                        self.compile_times.append(float(out[i]["compile_s"]))
                    if _poisons_device(str(out[i].get("error", ""))):
                        w.kill()
                elif not w.proc.is_alive() or w.conn.poll():
                    w.proc.join(1)
                    code = w.proc.exitcode
                    w.kill()
                    self.crashes += 1
                    out[i] = {"status": "crash", "error": f"worker process died (exit code {code})"}
                elif time.monotonic() - started[i] > (limit := self.current_compile_timeout()):
                    # re-evaluated every poll: compiles finishing in this batch tighten it
                    w.kill()
                    self.crashes += 1
                    out[i] = {
                        "status": "timeout",
                        "error": f"compile took over {limit:.1f} s (worker killed)",
                    }
                else:
                    continue
                del busy[i]
                idle.append(w)
        return out
