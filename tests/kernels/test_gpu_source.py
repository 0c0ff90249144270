"""The GPU form of generated kernels, checked without a GPU.

Code generation differs between the interpreter and a GPU where Triton's GPU lowering is
inexact or order-changing (float ``%`` and ``/``, ``tl.reduce`` of a non-commutative
function). These tests generate the GPU source as for an H100 (sm_90, 132 SMs), check the
forms used, and compile it to PTX and cubin with the installed Triton's own ptxas, which needs
no GPU. The interpreter runs check the results against torch / a float64 left fold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import torchship as ts
import torchship.kernels.runtime as runtime
from tests.kernels.test_compiler import close

_PTR = {torch.float16: "*fp16", torch.float32: "*fp32", torch.float64: "*fp64"}


@pytest.fixture
def as_h100(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make CPU arguments bind as CUDA ones on an H100 (for source generation only; the
    kernels bound that way are dropped afterwards, their key says CPU)."""
    monkeypatch.setattr(runtime, "_device_type", lambda args, kwargs: "cuda")
    props = types.SimpleNamespace(multi_processor_count=132, major=9, minor=0, name="H100")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    yield
    for k in (remainders, recurrences):
        k._bound.clear()
        k._fast_key = None


def compile_for_sm90(source: str, tmp_path: Path, pointers: dict[str, torch.dtype],
                     constexprs: dict[str, Any] | None = None) -> str:
    """Compile the first kernel of ``source`` for sm_90; its PTX. ``pointers`` gives the
    dtype of each tensor parameter, ``constexprs`` the compile-time ones; every other
    parameter is an int32 size or stride. Runs in a fresh process without TRITON_INTERPRET
    (Triton's standard library is made of interpreter functions in this one)."""
    pytest.importorskip("triton")
    (tmp_path / "generated.py").write_text(source)
    spec = {"pointers": {k: _PTR[v] for k, v in pointers.items()},
            "constexprs": constexprs or {}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _COMPILE, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return (tmp_path / "kernel.ptx").read_text()


_COMPILE = """
import importlib.util, json, sys
from pathlib import Path
import triton
from triton.backends.compiler import GPUTarget
d = Path(sys.argv[1])
spec = json.loads((d / "spec.json").read_text())
mod_spec = importlib.util.spec_from_file_location("generated", d / "generated.py")
module = importlib.util.module_from_spec(mod_spec)
mod_spec.loader.exec_module(module)
fn = triton.jit(getattr(module, next(n for n in vars(module) if n.endswith("_kernel0"))))
consts = spec["constexprs"]
signature = {p: "constexpr" if p in consts else spec["pointers"].get(p, "i32")
             for p in fn.arg_names}
src = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs={
    (fn.arg_names.index(k),): v for k, v in consts.items()})
compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32))
(d / "kernel.ptx").write_text(compiled.asm["ptx"])
"""


def _code(source: str) -> str:
    """The generated source without its comments (which quote the kernel's own lines)."""
    return "\n".join(line.split("#")[0] for line in source.splitlines())


@ts.kernel
def remainders(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = torch.empty([7, a.size(0)], dtype=a.dtype, device=a.device)
    for t in ts.tile(a.size(0), block_size=64):
        x, y = a[t], b[t]
        out[0, t] = torch.fmod(x, y)
        out[1, t] = x % y
        out[2, t] = x // y
        out[3, t] = torch.div(x, y, rounding_mode="trunc")
        out[4, t] = torch.fmod(x, 3)  # Python numbers: an int, a float
        out[5, t] = x % -0.75
        out[6, t] = x // 2.5
    return out


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_gpu_remainders_use_exact_fmod_and_division(dtype: torch.dtype, as_h100: None,
                                                    tmp_path: Path) -> None:
    """On an H100 Triton's float ``%`` gave ``1e30 % 7`` = -2.8e22 and ``-0.0 % 1`` = +0.0,
    and its float32 ``/`` put ``-3e37 // 7`` one ulp off: the GPU form calls libdevice's exact
    fmod and divides correctly rounded before rounding to an integer."""
    a, b = torch.ones(64, dtype=dtype), torch.ones(64, dtype=dtype)
    src = remainders.to_triton_code(args=(a, b))
    code = _code(src)
    assert code.count("_ts_libdevice.fmod(") == 6 and " % " not in code
    if dtype != torch.float64:  # float64 `/` is div.rn.f64 already
        assert code.count("tl.math.div_rn(") == 3
    compile_for_sm90(src, tmp_path, {"a": dtype, "b": dtype, "out": dtype})


def test_interpreter_remainders_match_torch(compiled_mode: None) -> None:
    a = torch.tensor([1e30, -3e37, 16777216.0, -0.0, 5.5, -7.25] * 11)[:64]
    b = torch.tensor([7.0, 7.0, 0.75, 1.0, -2.0, 0.5] * 11)[:64]
    want = torch.stack([torch.fmod(a, b), a % b, a // b, torch.div(a, b, rounding_mode="trunc"),
                        torch.fmod(a, 3), a % -0.75, a // 2.5])
    got = remainders(a, b)
    assert torch.equal(got, want) and torch.equal(got.signbit(), want.signbit())


def _decay(a: Any, b: Any) -> Any:
    """x_t = a_t * x_{t-1} + b_t as pairs: not commutative."""
    a_gain, a_add = a
    b_gain, b_add = b
    return a_gain * b_gain, a_add * b_gain + b_add


def _add(a: Any, b: Any) -> Any:
    return a + b


@ts.kernel
def recurrences(gain: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    out = torch.empty([2, gain.size(0)], dtype=gain.dtype, device=gain.device)
    for tm in ts.tile(gain.size(0), block_size=32):
        _, last = ts.reduce(_decay, (gain[tm, :], add[tm, :]), 1, other=(1.0, 0.0))
        out[0, tm] = last
        out[1, tm] = ts.reduce(_add, add[tm, :], 1)
    return out


def test_gpu_reduce_of_a_non_commutative_function_keeps_the_order(as_h100: None,
                                                                  tmp_path: Path) -> None:
    """tl.reduce folds in its own order on a GPU (a chunked selective scan's carried state
    was 19% off on an H100): a function that is not commutative reduces through a scan."""
    gain, add = torch.rand(64, 80), torch.randn(64, 80)
    src = recurrences.to_triton_code(args=(gain, add))
    code = _code(src)
    # the pair: one scan + one pick per output; the sum of `_add` stays one plain tl.reduce
    assert code.count("tl.associative_scan(") == 2 and "_ts_pick_last2" in code
    assert code.count("tl.reduce(") == 3
    compile_for_sm90(src, tmp_path, {"gain": torch.float32, "add": torch.float32,
                                     "out": torch.float32},
                     {"R_GAIN1": 128, "EXACT_GAIN1": False, "R_ADD1": 128, "EXACT_ADD1": False})


def test_interpreter_non_commutative_reduce_is_a_left_fold(compiled_mode: None) -> None:
    gain, add = torch.rand(37, 80) + 0.5, torch.randn(37, 80)
    state = torch.zeros(37, dtype=torch.float64)
    for t in range(80):
        state = gain[:, t].double() * state + add[:, t].double()
    got = recurrences(gain, add)
    close(got[0], state, atol=1e-4, rtol=1e-4)
    close(got[1], add.double().sum(1), atol=1e-4, rtol=1e-5)
