"""An interpreted (CPU) launch must leave triton.language as it found it: Triton's interpreter
leaves some of its patches in place (all of them before 3.7), and a later GPU compile in the
same process then failed ("'value' object has no attribute 'dtype'")."""

from __future__ import annotations

import torch

import torchship as ts
from torchship.kernels.backends.triton import launcher


@ts.kernel
def _scale_rows(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm in ts.tile(x.size(0)):
        row = x[tm, :]
        out[tm, :] = row / row.sum(dim=1, keepdim=True)
    return out


def _state() -> list[dict[str, object]]:
    return [dict(vars(o)) for o in launcher._lang_objects()]


def test_an_interpreted_launch_leaves_triton_language_unchanged() -> None:
    _scale_rows(torch.rand(32, 8) + 0.5)  # imports what the first compile pulls in
    before = _state()
    x = torch.rand(64, 40) + 0.5  # another shape: a new compile and launch
    torch.testing.assert_close(_scale_rows(x), x / x.sum(dim=1, keepdim=True))
    after = _state()  # names may be added (interpreter caches), none replaced
    assert [k for a, b in zip(after, before) for k in b if a.get(k) is not b[k]] == []


def test_restore_undoes_patches_left_by_an_interpreter() -> None:
    from triton.language import core

    saved = launcher._lang_snapshot()
    original_range = core.range
    core.range = lambda *a: iter(())  # what a leaky interpreter leaves behind
    original_to = core.tensor.to
    core.tensor.to = lambda self, *a, **k: self
    launcher._lang_restore(saved)
    assert core.range is original_range and core.tensor.to is original_to


@ts.kernel
def _masked_row_max(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty([x.size(0)], dtype=torch.float32, device=x.device)
    for tm in ts.tile(x.size(0)):
        total = ts.full([tm], float("-inf"), dtype=torch.float32)
        for tn in ts.tile(x.size(1), block_size=32):
            total = torch.maximum(total, x[tm, tn].amax(dim=1).float())
        out[tm] = total
    return out


def test_interpreters_without_bf16_constants_get_one(monkeypatch) -> None:
    """Triton 3.6's interpreter builder had no get_bf16: a masked bf16 max (``where(m, x,
    -inf)``) raised AttributeError there; the launcher supplies the fp32-then-truncate one."""
    from triton.runtime import interpreter

    monkeypatch.delattr(interpreter.InterpreterBuilder, "get_bf16")
    x = torch.randn(64, 70, dtype=torch.bfloat16)  # 70: the last column block is masked
    got = _masked_row_max(x)
    assert hasattr(interpreter.InterpreterBuilder, "get_bf16")
    torch.testing.assert_close(got, x.double().amax(dim=1).float(), rtol=0, atol=0)


def test_scalars_of_any_rank_convert_to_ints(monkeypatch) -> None:
    """Before Triton 3.7 the interpreter turned scalars into ints with ``int(data)``, which
    fails for 1-element arrays (a loop bound ``n // B * B``); the launcher's wrapper of the
    per-launch patching converts any rank."""
    import numpy as np
    from triton.runtime import interpreter

    def old_patch(tensor, *args, **kwargs):  # the pre-3.7 conversion
        tensor.__index__ = lambda self: int(self.handle.data)

    monkeypatch.setattr(interpreter, "_patch_lang_tensor", old_patch)
    launcher._interpreter_compat()

    class Handle:
        data = np.array([7])

    class Tensor:
        handle = Handle()

    interpreter._patch_lang_tensor(Tensor)
    assert range(Tensor())[-1] == 6


def test_the_kernel_language_is_reachable_from_the_top_level_package() -> None:
    """``import torchship as ts`` resolves kernel names lazily; every user-facing name of
    ``torchship.kernels`` (device functions such as ``ts.rand`` and ``ts.reduce`` included)
    must resolve there too, or a kernel written with the short import fails to compile."""
    import torchship
    import torchship.kernels as tk

    user_facing = [n for n in tk.__all__ if n not in ("BoundKernel", "Kernel")]
    missing = [n for n in user_facing if getattr(torchship, n, None) is not getattr(tk, n)]
    assert missing == []
