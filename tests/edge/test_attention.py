"""attention (passes/attention.py + runtime/attention.py): fused program == unfused program == eager."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.export import Dim

from examples.models.zoo import tiny_transformer  # noqa: I001
from tests.edge._util import build_program, rel_err, split_program
from torchship.edge import export
from torchship.edge.program import Program
from torchship.edge.runtime import loads
from torchship.edge.runtime.dims import ProgramError


class MHA(nn.Module):
    """Multi-head attention written out by hand (packed or separate projections, mul or div
    scale, optional additive key mask, optional cross attention on a second sequence)."""

    def __init__(self, d: int, heads: int, packed: bool, divide: bool) -> None:
        super().__init__()
        self.heads, self.packed, self.divide = heads, packed, divide
        self.qkv = nn.Linear(d, 3 * d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.out = nn.Linear(d, d)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, s, d = t.shape
        return t.reshape(b, s, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.packed:
            q, k, v = self.qkv(x).split(x.shape[-1], dim=-1)
        else:
            q, k, v = self.q(x), self.k(ctx), self.v(ctx)
        q, k, v = self._split(q), self._split(k), self._split(v)
        hd = q.shape[-1]
        s = q @ k.transpose(-1, -2)
        s = s / math.sqrt(hd) if self.divide else s * (1.0 / math.sqrt(hd))
        if mask is not None:
            s = s + (1.0 - mask[:, None, None, :].to(s.dtype)) * -1e9
        b, sq = x.shape[:2]
        return self.out((s.softmax(-1) @ v).transpose(1, 2).reshape(b, sq, -1))


class SDPA(nn.Module):
    """torch's scaled_dot_product_attention between projections: causal, or with a constant
    per-head float mask ``[1, H, S, S]`` (a relative-position bias)."""

    def __init__(self, d: int, heads: int, seq: int | None = None) -> None:
        super().__init__()
        self.heads, self.qkv, self.out = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.rel = None if seq is None else nn.Parameter(torch.randn(1, heads, seq, seq))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = (t.reshape(b, s, self.heads, -1).transpose(1, 2) for t in self.qkv(x).split(d, dim=-1))
        y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=self.rel, is_causal=self.rel is None)
        return self.out(y.transpose(1, 2).reshape(b, s, d))


class Probs(MHA):
    """Also returns the attention probabilities: the core must stay unfused."""

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, v = (self._split(t) for t in self.qkv(x).split(x.shape[-1], dim=-1))
        p = (q @ k.transpose(-1, -2) * 0.25).softmax(-1)
        return self.out((p @ v).transpose(1, 2).reshape(x.shape)), p


def _unfused(model: nn.Module, inputs: tuple, monkeypatch: pytest.MonkeyPatch, **kw: object) -> Program:
    import torchship.edge.passes as passes

    with monkeypatch.context() as mp:
        mp.setattr(passes, "fuse_attention", lambda g: 0)
        return export(model, inputs, **kw)


def _ops(prog: Program, method: str = "forward") -> dict[str, int]:
    return prog.summary()["methods"][method]["ops"]


def _eager64(model: nn.Module, inputs: tuple) -> list[np.ndarray]:
    with torch.no_grad():
        ref = model.double()(*(t.double() if t.is_floating_point() else t for t in inputs))
    model.float()
    return [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]


def _check(fused: Program, plain: Program, refs: list[np.ndarray], inputs: tuple, method: str = "forward") -> None:
    arrays = [t.numpy() for t in inputs]
    got_f = loads(fused.to_bytes()).method(method)(*arrays)
    got_p = loads(plain.to_bytes()).method(method)(*arrays)
    got_f, got_p = (list(g) if isinstance(g, tuple) else [g] for g in (got_f, got_p))
    for f, p, r in zip(got_f, got_p, refs):
        assert rel_err(f.astype(np.float64), r) <= 1e-5
        assert rel_err(p.astype(np.float64), r) <= 1e-5
        assert rel_err(f, p) <= 1e-5


def test_zoo_tiny_transformer(monkeypatch: pytest.MonkeyPatch) -> None:
    model, (ids, mask) = tiny_transformer()
    methods = {"encode": ((ids, mask), None)}
    fused, plain = export(model, (ids, mask), methods=methods), _unfused(model, (ids, mask), monkeypatch, methods=methods)
    for name in ("forward", "encode"):
        assert _ops(fused, name)["attention"] == 2 and "softmax" not in _ops(fused, name)
        assert "attention" not in _ops(plain, name) and _ops(plain, name)["softmax"] == 2
        with torch.no_grad():
            ref = getattr(model.double(), name)(ids, mask).numpy()
        model.float()
        _check(fused, plain, [ref], (ids, mask), name)
    assert fused.summary()["methods"]["forward"]["arena_bytes"] <= plain.summary()["methods"]["forward"]["arena_bytes"]


# (d, heads, batch, seq, context seq or None (self attention), packed, divide, mask)
CASES = {
    "packed-div-mask": (48, 3, 2, 7, None, True, True, True),
    "packed-mul-nomask-1head": (16, 1, 1, 5, None, True, False, False),
    "separate-mul-mask-long": (64, 8, 1, 40, None, False, False, True),
    "cross-div-nomask": (32, 4, 3, 6, 9, False, True, False),
    "cross-mul-mask": (24, 2, 2, 3, 11, False, False, True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fused_equals_unfused_equals_eager(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    d, heads, b, s, sk, packed, divide, masked = CASES[name]
    torch.manual_seed(len(name))
    model = MHA(d, heads, packed, divide).eval()
    x, ctx = torch.randn(b, s, d), torch.randn(b, sk or s, d)
    inputs: tuple = (x, x if sk is None else ctx)
    if masked:
        mask = torch.ones(b, sk or s, dtype=torch.long)
        mask[-1, (sk or s) // 2 :] = 0
        inputs = (*inputs, mask)
    fused, plain = export(model, inputs), _unfused(model, inputs, monkeypatch)
    assert _ops(fused).get("attention") == 1 and "softmax" not in _ops(fused)
    assert "attention" not in _ops(plain)
    _check(fused, plain, _eager64(model, inputs), inputs)


def test_rows_far_below_the_block_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows the block-max shift would underflow (a fully masked sequence beside a normal one;
    scores spread over hundreds) take the per-row softmax: fused == unfused == eager float32
    (float64 eager keeps score differences under a -1e9 mask that float32 rounds away)."""
    import torchship.edge.runtime.attention as runtime

    calls: list[bool] = []
    real = runtime._shifted_softmax

    def spy(s: np.ndarray):
        step = real(s)

        def run() -> bool:
            calls.append(step())
            return calls[-1]

        return run

    monkeypatch.setattr(runtime, "_shifted_softmax", spy)
    torch.manual_seed(5)
    model = MHA(32, 4, True, False).eval()
    x, mask = torch.randn(2, 6, 32), torch.ones(2, 6, dtype=torch.long)
    mask[1] = 0
    with torch.no_grad():
        model.qkv.weight[:32] *= 40.0  # huge query scores: rows of one head far below another's
    inputs = (x, x, mask)
    fused, plain = export(model, inputs), _unfused(model, inputs, monkeypatch)
    with torch.no_grad():
        ref = model(*inputs).numpy()
    _check(fused, plain, [ref.astype(np.float64)], inputs)
    assert calls and not any(calls)  # every call fell back
    x2 = torch.randn(2, 6, 32) * 0.01
    with torch.no_grad():
        model.qkv.weight[:32] /= 40.0
    fused = export(model, (x2, x2, torch.ones(2, 6, dtype=torch.long)))
    calls.clear()
    loads(fused.to_bytes()).run(x2.numpy(), x2.numpy(), np.ones((2, 6), np.int64))
    assert calls and all(calls)  # the shifted softmax when every row is near the maximum


def test_sdpa_causal(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model, x = SDPA(32, 4).eval(), torch.randn(2, 9, 32)
    fused, plain = export(model, (x,)), _unfused(model, (x,), monkeypatch)
    assert _ops(fused).get("attention") == 1 and "attention" not in _ops(plain)
    _check(fused, plain, _eager64(model, (x,)), (x,))


@pytest.mark.parametrize("scores", [64, 100, 1 << 16])
def test_blocks_of_heads_with_a_per_head_bias(scores: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Score blocks of 1, 2 or all 6 heads (``_SCORES`` elements), bias sliced per block."""
    import torchship.edge.runtime.attention as runtime

    monkeypatch.setattr(runtime, "_SCORES", scores)
    torch.manual_seed(6)
    model, x = SDPA(24, 6, seq=5).eval(), torch.randn(2, 5, 24)
    fused, plain = export(model, (x,)), _unfused(model, (x,), monkeypatch)
    assert _ops(fused).get("attention") == 1
    _check(fused, plain, _eager64(model, (x,)), (x,))


def test_dynamic_sequence(monkeypatch: pytest.MonkeyPatch) -> None:
    """One program, several sequence lengths (the binder's views are made per length)."""
    torch.manual_seed(1)
    model = MHA(32, 4, True, True).eval()
    x, mask = torch.randn(1, 6, 32), torch.ones(1, 6, dtype=torch.long)
    seq = Dim("seq", min=2, max=20)
    dyn = ({1: seq}, {1: seq}, {1: seq})
    prog = export(model, (x, x, mask), dynamic_shapes=dyn)
    assert _ops(prog).get("attention") == 1
    fused = loads(prog.to_bytes())
    for n in (2, 13, 20, 5):
        x, mask = torch.randn(1, n, 32), torch.ones(1, n, dtype=torch.long)
        mask[0, n - 1 :] = 0
        (ref,) = _eager64(model, (x, x, mask))
        assert rel_err(fused.run(x.numpy(), x.numpy(), mask.numpy()).astype(np.float64), ref) <= 1e-5


def test_not_fused_when_probabilities_are_an_output() -> None:
    torch.manual_seed(2)
    model, x = Probs(16, 2, True, False).eval(), torch.randn(1, 5, 16)
    prog = export(model, (x, x))
    assert "attention" not in _ops(prog) and _ops(prog)["softmax"] == 1
    got = loads(prog.to_bytes()).run(x.numpy(), x.numpy())
    for g, r in zip(got, _eager64(model, (x, x))):
        assert rel_err(g.astype(np.float64), r) <= 1e-5


def test_int8_program_fuses_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Weight-only int8 leaves the (weightless) attention core float32: fused there as well."""
    model, (ids, mask) = tiny_transformer()
    fused = export(model, (ids, mask), quantize="int8")
    plain = _unfused(model, (ids, mask), monkeypatch, quantize="int8")
    assert _ops(fused)["attention"] == 2 and "attention" not in _ops(plain)
    got_f, got_p = (loads(p.to_bytes()).run(ids.numpy(), mask.numpy()) for p in (fused, plain))
    assert rel_err(got_f, got_p) <= 1e-5


def test_float64_program_keeps_the_unfused_core() -> None:
    torch.manual_seed(3)
    model, x = MHA(16, 2, True, True).double().eval(), torch.randn(1, 4, 16, dtype=torch.float64)
    assert "attention" not in _ops(export(model, (x, x)))






@pytest.fixture(scope="module")
def fused_bytes() -> bytes:
    torch.manual_seed(4)
    x, mask = torch.randn(1, 6, 32), torch.ones(1, 6, dtype=torch.long)
    return export(MHA(32, 4, True, True).eval(), (x, x, mask)).to_bytes()


def _tampered(data: bytes, fn) -> bytes:
    header, weights = split_program(data)
    (ins,) = [i for i in header["methods"]["forward"]["instructions"] if i["op"] == "attention"]
    fn(ins)
    return build_program(header, weights)


def test_independent_rebuild_runs(fused_bytes: bytes) -> None:
    rng = np.random.default_rng(0)
    x, mask = rng.standard_normal((1, 6, 32)).astype(np.float32), np.ones((1, 6), np.int64)
    assert np.array_equal(loads(_tampered(fused_bytes, lambda ins: None)).run(x, x, mask), loads(fused_bytes).run(x, x, mask))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"heads": 0}, "must be >= 1"),
        ({"v_offset": 80}, "v_offset 80"),
        ({"q_offset": -1}, "q_offset -1"),
        ({"heads": 8}, "must fit"),
        ({"head_dim": 16}, "must fit"),
        ({"scale": "x"}, "expected float"),
        ({"causal": True}, "no attribute"),
    ],
)
def test_loader_rejects_bad_attributes(fused_bytes: bytes, change: dict, message: str) -> None:
    with pytest.raises(ProgramError, match=message):
        loads(_tampered(fused_bytes, lambda ins: ins.setdefault("attrs", {}).update(change)))


def test_loader_rejects_bad_inputs(fused_bytes: bytes) -> None:
    def drop_v(ins: dict) -> None:
        del ins["inputs"][2:]

    with pytest.raises(ProgramError, match="attention"):
        loads(_tampered(fused_bytes, drop_v))

    def bias_as_q(ins: dict) -> None:  # the [1, 1, 1, 6] bias as q: not 3-D
        ins["inputs"][0] = ins["inputs"][3]

    with pytest.raises(ProgramError, match="must be 3-D"):
        loads(_tampered(fused_bytes, bias_as_q))


def test_llama_attention_after_complex_rope_and_repeated_kv_heads_is_fused() -> None:
    """Meta's llama attention: q and k come out of a complex rotary embedding as [B, S, H, D]
    (not a reshape of [B, S, H*D]) and k / v heads are repeated with expand (grouped-query);
    the pass packs them with a view and still emits one ``attention``, matching eager."""
    import copy

    from tests.edge.test_export_complex import RopeAttention

    torch.manual_seed(0)
    model = RopeAttention("buffer").eval()
    prog = export(model, (torch.randn(2, 8, 32),), dynamic_shapes={"x": {1: Dim("seq", max=16)}})
    assert [ins.op for ins in prog.graphs["forward"].instrs].count("attention") == 1
    ref = copy.deepcopy(model).double()
    for s in (1, 7, 16):
        x = torch.randn(2, s, 32)
        want = ref(x.double()).detach().numpy()
        assert np.abs(prog.run(x.numpy()) - want).max() <= 2e-6 * np.abs(want).max()
