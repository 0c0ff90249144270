"""fused_mbconv (passes/mbconv.py + runtime/mbconv.py): fused program == unfused program == eager."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.edge._util import build_program, rel_err, split_program
from torchship.edge import export
from torchship.edge.program import Program
from torchship.edge.runtime import loads
from torchship.edge.runtime.dims import ProgramError


class Block(nn.Module):
    """expand 1x1 -> act -> depthwise -> act -> project 1x1 [+ x], with BN (folded at export)."""

    def __init__(self, c: int, hidden: int, out: int, k: int, stride: int, act: type[nn.Module], residual: bool, bias: bool) -> None:
        super().__init__()
        self.residual = residual
        self.expand = nn.Sequential(nn.Conv2d(c, hidden, 1, bias=bias), nn.BatchNorm2d(hidden), act())
        self.dw = nn.Sequential(nn.Conv2d(hidden, hidden, k, stride, k // 2, groups=hidden, bias=bias), nn.BatchNorm2d(hidden), act())
        self.project = nn.Conv2d(hidden, out, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


def _block(seed: int, *args: object) -> nn.Module:
    torch.manual_seed(seed)
    m = Block(*args)  # type: ignore[arg-type]
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return m.eval()


def _unfused(model: nn.Module, inputs: tuple[torch.Tensor, ...], monkeypatch: pytest.MonkeyPatch) -> Program:
    import torchship.edge.passes as passes

    with monkeypatch.context() as mp:
        mp.setattr(passes, "fuse_mbconv", lambda g: 0)
        return export(model, inputs)


def _ops(prog: Program) -> dict[str, int]:
    return prog.summary()["methods"]["forward"]["ops"]


# (channels, hidden, out, kernel, stride, activation, residual, bias, N, H, W)
CASES = {
    "relu6-residual": (16, 96, 16, 3, 1, nn.ReLU6, True, False, 1, 14, 14),
    "relu-noresidual-odd": (5, 37, 7, 3, 1, nn.ReLU, False, True, 2, 13, 11),
    "relu6-stride2": (8, 45, 12, 3, 2, nn.ReLU6, False, False, 1, 15, 12),
    "relu-k5-stride2-batch": (6, 29, 6, 5, 2, nn.ReLU, False, True, 3, 9, 10),
    "relu6-k5-residual-odd": (7, 53, 7, 5, 1, nn.ReLU6, True, True, 1, 11, 9),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fused_equals_unfused_equals_eager(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    c, hidden, out, k, stride, act, residual, bias, n, h, w = CASES[name]
    model = _block(len(name), c, hidden, out, k, stride, act, residual, bias)
    x = torch.randn(n, c, h, w)
    fused, plain = export(model, (x,)), _unfused(model, (x,), monkeypatch)
    assert _ops(fused) == {"fused_mbconv": 1}
    assert _ops(plain).get("fused_mbconv", 0) == 0 and _ops(plain)["conv2d"] == 3
    with torch.no_grad():
        ref = model.double()(x.double()).numpy()
    got_f, got_p = loads(fused.to_bytes()).run(x.numpy()), loads(plain.to_bytes()).run(x.numpy())
    assert rel_err(got_f.astype(np.float64), ref) <= 1e-5
    assert rel_err(got_p.astype(np.float64), ref) <= 1e-5
    assert rel_err(got_f, got_p.astype(np.float32)) <= 1e-5
    assert fused.summary()["methods"]["forward"]["arena_bytes"] < plain.summary()["methods"]["forward"]["arena_bytes"]


def test_several_channel_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small blocks: several expand/project blocks (project terms accumulated) and depthwise blocks."""
    from torchship.edge.runtime import mbconv

    model = _block(3, 6, 41, 6, 3, 1, nn.ReLU6, True, True)
    x = torch.randn(2, 6, 10, 9)
    monkeypatch.setattr(mbconv, "_BAND", 3 * 12 * 11)
    monkeypatch.setattr(mbconv, "_BLOCK", 2 * 4 * 12 * 11)
    got = loads(export(model, (x,)).to_bytes()).run(x.numpy())
    with torch.no_grad():
        ref = model.double()(x.double()).numpy()
    assert rel_err(got.astype(np.float64), ref) <= 1e-5


class Shared(nn.Module):
    """The expand output is also read elsewhere: the chain must stay unfused."""

    def __init__(self) -> None:
        super().__init__()
        self.b = _block(0, 4, 24, 4, 3, 1, nn.ReLU6, True, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.b.expand(x)
        y = self.b.project(self.b.dw(h))
        return x + y, h.mean()


class ProjectOut(nn.Module):
    """The project result is an output and also feeds the residual add: fuse without the add."""

    def __init__(self) -> None:
        super().__init__()
        self.b = _block(1, 4, 24, 4, 3, 1, nn.ReLU, False, True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.b(x)
        return y, x + y


def test_not_fused_when_intermediate_used_elsewhere() -> None:
    x = torch.randn(1, 4, 8, 8)
    prog = export(Shared().eval(), (x,))
    assert "fused_mbconv" not in _ops(prog) and _ops(prog)["conv2d"] == 3
    got = loads(prog.to_bytes()).run(x.numpy())
    with torch.no_grad():
        ref = Shared().eval()(x)
    assert rel_err(got[0], ref[0].numpy()) <= 1e-5


def test_residual_not_fused_when_project_output_is_read_elsewhere() -> None:
    x = torch.randn(1, 4, 8, 8)
    model = ProjectOut().eval()
    prog = export(model, (x,))
    assert _ops(prog) == {"fused_mbconv": 1, "add": 1}
    got = loads(prog.to_bytes()).run(x.numpy())
    with torch.no_grad():
        ref = model(x)
    for g, r in zip(got, ref):
        assert rel_err(g, r.numpy()) <= 1e-5


def test_int8_keeps_the_unfused_chain() -> None:
    x = torch.randn(1, 16, 8, 8)
    prog = export(_block(2, 16, 96, 16, 3, 1, nn.ReLU6, True, False), (x,), quantize="int8")
    assert "fused_mbconv" not in _ops(prog)






@pytest.fixture(scope="module")
def fused_bytes() -> bytes:
    return export(_block(4, 8, 32, 8, 3, 1, nn.ReLU6, True, True), (torch.randn(1, 8, 8, 8),)).to_bytes()


def _tampered(data: bytes, fn) -> bytes:
    header, weights = split_program(data)
    (ins,) = [i for i in header["methods"]["forward"]["instructions"] if i["op"] == "fused_mbconv"]
    fn(ins)
    return build_program(header, weights)


def test_independent_rebuild_runs(fused_bytes: bytes) -> None:
    x = np.random.default_rng(0).standard_normal((1, 8, 8, 8)).astype(np.float32)
    assert np.array_equal(loads(_tampered(fused_bytes, lambda ins: None)).run(x), loads(fused_bytes).run(x))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"expand_min": 1.0}, "must contain 0"),
        ({"depthwise_min": 7.0, "depthwise_max": 6.0}, "depthwise_min"),
        ({"stride": [0, 1]}, "stride"),
        ({"residual": True, "stride": [2, 2]}, "residual"),
        ({"groups": 1}, "no attribute"),
        ({"residual": 1}, "expected bool"),
    ],
)
def test_loader_rejects_bad_attributes(fused_bytes: bytes, change: dict, message: str) -> None:
    with pytest.raises(ProgramError, match=message):
        loads(_tampered(fused_bytes, lambda ins: ins.setdefault("attrs", {}).update(change)))


def test_loader_rejects_bad_weight_shapes(fused_bytes: bytes) -> None:
    def swap(ins: dict) -> None:  # expand and depthwise weights swapped
        ins["inputs"][3], ins["inputs"][1] = ins["inputs"][1], ins["inputs"][3]

    with pytest.raises(ProgramError, match="fused_mbconv"):
        loads(_tampered(fused_bytes, swap))
    with pytest.raises(ProgramError, match="fused_mbconv"):
        loads(_tampered(fused_bytes, lambda ins: ins["inputs"].pop()))  # arity: 7 inputs
