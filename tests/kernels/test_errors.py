"""Unsupported constructs raise a KernelError naming the file, the line, the construct and
what to write instead. Each kernel marks the offending line with ``# <- here``."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

import torchship as ts
from torchship.kernels import KernelError, KernelLaunchError, KernelSyntaxError, KernelTypeError


class Doubler:
    def __call__(self, v: Any) -> Any:
        return v * 2


helper = Doubler()  # a callable object, not a plain def: device code cannot call it


@ts.kernel
def k_while(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        while True:  # <- here
            pass
        out[t] = x[t]
    return out


@ts.kernel
def k_try(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        try:  # <- here  # noqa: SIM105
            out[t] = x[t]
        except ValueError:
            pass
    return out


@ts.kernel
def k_unknown_call(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        out[t] = helper(x[t])  # <- here
    return out


@ts.kernel
def k_data_if(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        v = x[t]
        if v.sum() > 0:  # <- here
            v = v + 1
        out[t] = v
    return out


@ts.kernel
def k_print(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        print(x[t])  # <- here
        out[t] = x[t]
    return out


@ts.kernel
def k_step_slice(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        out[t, :] = x[t, ::-1]  # <- here
    return out


@ts.kernel
def k_tensor_index(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm, tn in ts.tile(x.size()):
        out[tm, tn] = x[idx[tm, 0], idx[0, tn]]  # <- here
    return out


@ts.kernel
def k_carried_dtype(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty([x.size(0)], dtype=torch.float32, device=x.device)
    for tm in ts.tile(x.size(0)):
        acc = ts.zeros([tm], dtype=torch.float32)
        for tn in ts.tile(x.size(1)):
            acc = (acc + x[tm, tn].sum(dim=1)).to(torch.float16)  # <- here
        out[tm] = acc
    return out


@ts.kernel
def k_return(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        out[t] = x[t]
        return out  # <- here
    return out


@ts.kernel
def k_nested_def(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        def inner(v: Any) -> Any:  # <- here
            return v
        out[t] = x[t]
    return out


@ts.kernel
def k_listcomp(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        vals = [x[t] for _ in range(2)]  # <- here
        out[t] = vals[0]
    return out


@ts.kernel
def k_torch_op(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm in ts.tile(x.size(0)):
        out[tm, :] = torch.kthvalue(x[tm, :], 1, 1).values  # <- here
    return out


@ts.kernel
def k_float_tile(x: torch.Tensor, n: float) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        for _u in ts.tile(n):  # <- here
            out[t] = x[t]
    return out


@ts.kernel
def k_slice_bounds(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        out[t, 0:2] = x[t, t.begin:2 * t.begin]  # <- here
    return out


@ts.kernel
def k_alloc(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        tmp = torch.zeros_like(x)  # <- here
        out[t] = x[t] + tmp[t]
    return out


@ts.kernel
def k_bool_and(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        v = x[t]
        out[t] = torch.where(v > 0 and v < 1, v, 0.0)  # <- here
    return out


@ts.kernel
def k_tile_mismatch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm, tn in ts.tile(x.size()):
        out[tm, tn] = x[tm, tn] + y[tn, tm]  # <- here
    return out


@ts.kernel
def k_loop_local(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty([x.size(0)], dtype=x.dtype, device=x.device)
    for tm in ts.tile(x.size(0)):
        for tn in ts.tile(x.size(1)):
            part = x[tm, tn].sum(dim=1)
        out[tm] = part  # <- here
    return out


@ts.kernel
def k_store_into_block(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        v = x[t]
        v[t] = 0.0  # <- here
        out[t] = v
    return out


def _line(fn: Any) -> int:
    lines, first = inspect.getsourcelines(fn.fn)
    for i, text in enumerate(lines):
        if "# <- here" in text:
            return first + i
    raise AssertionError("no marker")


X2 = (torch.randn(8, 8),)
CASES = [
    (k_while, X2, KernelSyntaxError, "`while`", "ts.tile"),
    (k_try, X2, KernelSyntaxError, "`try`", "host code"),
    (k_unknown_call, X2, KernelSyntaxError, "cannot call `helper`", "inline"),
    (k_data_if, X2, KernelSyntaxError, "data-dependent `if`", "torch.where"),
    (k_print, X2, KernelSyntaxError, "`print`", "TORCHSHIP_INTERPRET"),
    (k_step_slice, X2, KernelSyntaxError, "has a step below 1", "host code"),
    (k_tensor_index, (torch.randn(8, 8), torch.zeros(8, 8, dtype=torch.int64)),
     KernelTypeError, "two integer blocks", "flattened view"),
    (k_carried_dtype, X2, KernelTypeError, "changes type", ".to(torch.float32)"),
    (k_return, X2, KernelSyntaxError, "`return` inside a tile loop", "output tensor"),
    (k_nested_def, X2, KernelSyntaxError, "nested `def`", "inline"),
    (k_listcomp, X2, KernelSyntaxError, "list comprehensions", "ts.zeros"),
    (k_torch_op, X2, KernelSyntaxError, "unsupported torch op `torch.kthvalue`", "supported:"),
    (k_float_tile, (torch.randn(8), 2.5), KernelTypeError, "must be ints", "x.size(d)"),
    (k_slice_bounds, X2, KernelTypeError, "needs a launch-time width", "ts.tile(begin, end)"),
    (k_alloc, X2, KernelSyntaxError, "allocates a tensor", "host code"),
    (k_bool_and, X2, KernelSyntaxError, "`and`/`or` on blocks", "&"),
    (k_tile_mismatch, (torch.randn(8, 8), torch.randn(8, 8)), KernelTypeError, "do not broadcast", None),
    (k_loop_local, X2, KernelSyntaxError, "not available after it", "before the loop"),
    (k_store_into_block, X2, KernelSyntaxError, "cannot assign into", "torch.where"),
]


@pytest.mark.parametrize(("kernel", "args", "cls", "what", "hint"), CASES,
                         ids=[c[0].fn.__name__ for c in CASES])
def test_unsupported_construct_error(kernel: Any, args: tuple, cls: type, what: str,
                                     hint: str | None, compiled_mode: None) -> None:
    with pytest.raises(cls) as info:
        kernel(*args)
    err = info.value
    assert isinstance(err, KernelError)
    assert err.filename == __file__
    assert err.lineno == _line(kernel), str(err)
    assert what in err.message, str(err)
    if hint is not None:
        assert err.hint and hint in err.hint, str(err)
    text = str(err)
    assert f"test_errors.py:{err.lineno}:" in text and err.source_line.strip() in text


def test_size_mismatch_between_full_dims_is_checked_at_launch(compiled_mode: None) -> None:
    @ts.kernel
    def scale_rows(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for tm in ts.tile(x.size(0)):
            out[tm, :] = x[tm, :] * w[None, :]
        return out

    scale_rows(torch.randn(4, 8), torch.randn(8))
    # the message names the tensor whose size differs (w), not only the dim it was unified with
    with pytest.raises(KernelLaunchError, match=r"size mismatch: .*w\.size\(0\).*: (8 != 9|9 != 8)"):
        scale_rows(torch.randn(4, 8), torch.randn(9))


def test_source_must_be_available(compiled_mode: None) -> None:
    ns: dict[str, Any] = {"ts": ts, "torch": torch}
    exec("def k(x):\n    for t in ts.tile(x.size(0)):\n        x[t] = 1\n    return x\n", ns)
    with pytest.raises(KernelSyntaxError, match="cannot read the source"):
        ts.kernel(ns["k"])(torch.zeros(3))


def test_masked_off_lanes_raise_no_numpy_warnings(compiled_mode: None) -> None:
    """The interpreter computes masked-off lanes too (zeros here): their 1/0 must not surface
    as numpy warnings, which are errors under ``warnings.simplefilter("error")``."""
    import warnings

    @ts.kernel
    def recip(x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for t in ts.tile(x.size(0)):
            out[t] = 1.0 / x[t]
        return out

    x = torch.rand(100) + 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.allclose(recip(x), 1 / x)
