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
