"""Reference-mode semantics of the tile language (torchship.kernels.language / ref)."""

from __future__ import annotations

import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchship as ts
from torchship.kernels import language as tl
from torchship.kernels import ref

# ---------------------------------------------------------------------------- tile / grid


@given(
    begin=st.integers(0, 50), length=st.integers(0, 300), bs=st.sampled_from([1, 2, 4, 16, 64])
)
@settings(max_examples=60, deadline=None)
def test_tile_covers_range_exactly_once(begin: int, length: int, bs: int) -> None:
    end = begin + length
    tiles = list(tl.tile(begin, end, block_size=bs))
    covered = [i for t in tiles for i in range(t.begin, t.end)]
    assert covered == list(range(begin, end))
    assert all(t.block_size == bs for t in tiles)
    assert all(0 < t.end - t.begin <= bs for t in tiles)
    assert [t.id for t in tiles] == list(range(len(tiles)))
    assert all(t.index.tolist() == list(range(t.begin, t.end)) for t in tiles)


def test_tile_ragged_last_and_default_block_size() -> None:
    tiles = list(tl.tile(130))
    assert [(t.begin, t.end, t.block_size) for t in tiles] == [
        (0, 64, 64), (64, 128, 64), (128, 130, 64)
    ]
    assert tiles[-1].count == 2 and tiles[0].count == 64


def test_tile_empty_and_negative_ranges_yield_nothing() -> None:
    assert list(tl.tile(0)) == []
    assert list(tl.tile(5, 3)) == []
    assert list(tl.grid(0)) == []


def test_tile_multi_dim_row_major_and_sizes() -> None:
    x = torch.zeros(5, 3)
    steps = list(tl.tile(x.size(), block_size=2))
    assert [(a.begin, b.begin) for a, b in steps] == [
        (0, 0), (0, 2), (2, 0), (2, 2), (4, 0), (4, 2)
    ]
    assert all(isinstance(s, tuple) and len(s) == 2 for s in steps)
    # per-dim block sizes, None = default
    steps = list(tl.tile([3, 100], block_size=[1, None]))
    assert [(a.begin, a.end, b.begin, b.end) for a, b in steps][:3] == [
        (0, 1, 0, 64), (0, 1, 64, 100), (1, 2, 0, 64)
    ]
    # begin/end sequences
    steps = list(tl.tile([1, 2], [3, 5], block_size=2))
    assert [(a.begin, a.end, b.begin, b.end) for a, b in steps] == [
        (1, 3, 2, 4), (1, 3, 4, 5)
    ]


def test_tile_accepts_torch_size_and_0d_int_tensor() -> None:
    assert [t.end for t in tl.tile(torch.tensor(5), block_size=4)] == [4, 5]
    assert len(list(tl.tile(torch.Size([2, 2]), block_size=1))) == 4


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: tl.tile(1.5), TypeError, "expected an int"),
        (lambda: tl.tile(True), TypeError, "bool"),
        (lambda: tl.tile([]), ValueError, "at least one dimension"),
        (lambda: tl.tile([1, 2], [3]), ValueError, "2 begins but 1 ends"),
        (lambda: tl.tile(1, [3]), TypeError, "both be ints or sequences"),
        (lambda: tl.tile(8, block_size=0), ValueError, "power of two"),
        (lambda: tl.tile(8, block_size=48), ValueError, "power of two"),
        (lambda: tl.tile([2, 2], block_size=[4]), ValueError, "1 entries for 2 dimensions"),
        (lambda: tl.grid("3"), TypeError, "expected an int"),
    ],
)
def test_tile_and_grid_reject_bad_arguments(call, exc, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc, match=match):
        list(call())


def test_grid_forms() -> None:
    assert list(tl.grid(3)) == [0, 1, 2]
    assert list(tl.grid(2, 4)) == [2, 3]
    assert list(tl.grid([2, 3])) == [(i, j) for i in range(2) for j in range(3)]
    assert list(tl.grid([1, 0], [3, 2])) == [(1, 0), (1, 1), (2, 0), (2, 1)]


def test_register_block_size_shared_and_clamped() -> None:
    bs = tl.register_block_size(16, 32)
    assert bs.ref_value() == 32  # default 64 clamped to hi
    a = list(tl.tile(100, block_size=bs))
    b = list(tl.tile(7, block_size=bs))
    assert {t.block_size for t in a + b} == {32}
    assert tl.register_block_size(128, 256).ref_value() == 128
    with pytest.raises(ValueError, match="1 <= lo <= hi"):
        tl.register_block_size(8, 4)
    assert [t.end for t in ref.run(lambda: list(tl.tile(50, block_size=bs)), (), block_size=20)] == [
        20, 40, 50
    ]


def test_register_tunable_default_override_and_errors() -> None:
    assert tl.register_tunable("k", [3, 5]) == 3
    assert ref.run(lambda: tl.register_tunable("k", [3, 5]), (), tunables={"k": 5}) == 5
    with pytest.raises(ValueError, match="not one of"):
        ref.run(lambda: tl.register_tunable("k", [3, 5]), (), tunables={"k": 4})
    with pytest.raises(ValueError, match="must not be empty"):
        tl.register_tunable("k", [])
    with pytest.raises(TypeError, match="non-empty str"):
        tl.register_tunable("", [1])


# ---------------------------------------------------------------------------- indexing


def test_tensor_indexing_by_tiles_ints_none_and_colon() -> None:
    x = torch.arange(6 * 7, dtype=torch.float32).view(6, 7)
    tm = tl.Tile(2, 5, 4)
    tn = tl.Tile(4, 7, 4)
    torch.testing.assert_close(x[tm, :], x[2:5, :])
    torch.testing.assert_close(x[tm], x[2:5])
    torch.testing.assert_close(x[tm, tn], x[2:5, 4:7])
    torch.testing.assert_close(x[tm, None], x[2:5, None])
    torch.testing.assert_close(x[1, tn], x[1, 4:7])
    torch.testing.assert_close(x[None, tm, 3], x[None, 2:5, 3])
    torch.testing.assert_close(x[[tm, tn]], x[2:5, 4:7])
    torch.testing.assert_close(x[tm.index, :], x[2:5, :])


def test_tile_outside_indexing_is_a_clear_error() -> None:
    tm = tl.Tile(0, 3, 4)
    with pytest.raises(TypeError, match="use tile.index"):
        torch.where(tm, torch.zeros(3), torch.ones(3))  # type: ignore[call-overload]


def test_load_is_a_copy_not_a_view() -> None:
    x = torch.zeros(4, 4)
    block = x[tl.Tile(0, 2, 2), :]
    block += 1
    assert x.sum().item() == 0.0


def test_store_through_tiles_and_ints() -> None:
    out = torch.full((5, 6), -1.0)
    tm, tn = tl.Tile(3, 5, 4), tl.Tile(0, 4, 4)
    out[tm, tn] = torch.ones(2, 4)
    out[0, tn] = 2.0
    out[tm, 5] = torch.tensor([7.0, 8.0])
    expected = torch.full((5, 6), -1.0)
    expected[3:5, 0:4] = 1.0
    expected[0, 0:4] = 2.0
    expected[3:5, 5] = torch.tensor([7.0, 8.0])
    torch.testing.assert_close(out, expected)
    with pytest.raises(RuntimeError):
        out[tm, tn] = torch.ones(3, 4)  # wrong block shape is an error, not a silent broadcast


def test_tile_index_arithmetic_causal_mask_on_kernel_device() -> None:
    tm, tn = tl.Tile(2, 5, 4), tl.Tile(0, 4, 4)
    mask = tm.index[:, None] >= tn.index[None, :]
    expected = torch.arange(2, 5)[:, None] >= torch.arange(0, 4)[None, :]
    assert torch.equal(mask, expected)
    assert tm.index.dtype == torch.int32
    devices = ref.run(lambda x: next(iter(tl.tile(3))).index.device, (torch.zeros(1, device="meta"),))
    assert devices.type == "meta"


def test_factories_without_device_follow_the_kernel_device() -> None:
    """torch.arange/full/zeros in a body with no device= land where the arguments are (on a
    GPU, CPU factories met CUDA blocks and raised 'Expected all tensors to be on the same
    device')."""
    def body(x: torch.Tensor) -> list[torch.device]:
        return [torch.arange(3).device, torch.full([2], 1.0).device, torch.zeros(2).device]

    assert {d.type for d in ref.run(body, (torch.zeros(1, device="meta"),))} == {"meta"}
    assert torch.zeros(1).device.type == "cpu"  # the default is restored afterwards


# ---------------------------------------------------------------------------- zeros / full / dot


def test_zeros_and_full_take_actual_tile_sizes() -> None:
    tm, tn = tl.Tile(64, 67, 64), tl.Tile(0, 32, 32)
    z = tl.zeros([tm, tn], dtype=torch.float16)
    assert z.shape == (3, 32) and z.dtype == torch.float16 and not z.any()
    f = tl.full([tm, 1], float("-inf"))
    assert f.shape == (3, 1) and f.dtype == torch.float32 and torch.isinf(f).all()
    assert tl.zeros([tm]).shape == (3,)
    assert tl.full([2, tn], 7, dtype=torch.int32).tolist() == [[7] * 32] * 2
    with pytest.raises(TypeError, match="shape entry 1"):
        tl.zeros([tm, 2.5])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_dot_accumulates_in_float32(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 7, generator=g).to(dtype)
    b = torch.randn(7, 3, generator=g).to(dtype)
    acc = torch.randn(5, 3, generator=g)
    got = tl.dot(a, b, acc=acc)
    assert got.dtype == torch.float32
    expected = acc.double() + a.double() @ b.double()
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
    assert tl.dot(a, b).dtype == torch.float32


def test_dot_batched_and_float64_and_errors() -> None:
    a, b = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 4, 5, dtype=torch.float64)
    out = tl.dot(a, b)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, torch.bmm(a, b))
    with pytest.raises(ValueError, match="2-D or two 3-D"):
        tl.dot(torch.ones(3), torch.ones(3))
    with pytest.raises(TypeError, match="must be tensors"):
        tl.dot([[1.0]], torch.ones(1, 1))


# ---------------------------------------------------------------------------- atomic_add


def test_atomic_add_with_tiles_and_ints() -> None:
    out = torch.zeros(4, 3)
    tm = tl.Tile(1, 3, 2)
    tl.atomic_add(out, [tm, 0], torch.tensor([1.0, 2.0]))
    tl.atomic_add(out, [tm, 0], torch.tensor([1.0, 2.0]))
    tl.atomic_add(out, [0, tl.Tile(0, 3, 4)], 5)
    expected = torch.zeros(4, 3)
    expected[1:3, 0] = torch.tensor([2.0, 4.0])
    expected[0, :] = 5.0
    torch.testing.assert_close(out, expected)


def test_atomic_add_repeated_tensor_indices_all_count() -> None:
    out = torch.zeros(3, 4, dtype=torch.float64)
    ids = torch.tensor([0, 2, 0, 0])
    vals = torch.arange(8, dtype=torch.float64).view(4, 2)
    tl.atomic_add(out, [ids, tl.Tile(1, 3, 2)], vals)
    expected = torch.zeros(3, 4, dtype=torch.float64)
    for r, i in enumerate(ids.tolist()):
        expected[i, 1:3] += vals[r]
    torch.testing.assert_close(out, expected)
    # non-contiguous target
    base = torch.zeros(4, 3)
    target = base.t()
    tl.atomic_add(target, [torch.tensor([1, 1]), 2], torch.tensor([1.5, 2.0]))
    assert base[2, 1].item() == 3.5 and base.sum().item() == 3.5


def test_atomic_add_wrong_rank_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 entries for a 3-D target"):
        tl.atomic_add(torch.zeros(2, 2, 2), [0, 1], 1.0)


# ---------------------------------------------------------------------------- ref.run


def _softmax_body(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm in tl.tile(x.size(0)):
        row = x[tm, :].to(torch.float32)
        e = torch.exp(row - row.amax(dim=1, keepdim=True))
        out[tm, :] = (e / e.sum(dim=1, keepdim=True)).to(x.dtype)
    return out


@pytest.mark.parametrize("block_size", [1, 7, 32, 64, 1000])
def test_ref_run_result_does_not_depend_on_block_size(block_size: int) -> None:
    x = torch.randn(67, 129, dtype=torch.float64)
    got = ref.run(_softmax_body, (x,), block_size=block_size)
    torch.testing.assert_close(got, torch.softmax(x, dim=1))


def test_ref_run_disables_grad_restores_state_and_checks_devices() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    out = ref.run(_softmax_body, (x,), block_size=2)
    assert not out.requires_grad
    assert [t.block_size for t in tl.tile(200)][0] == tl.DEFAULT_REF_BLOCK_SIZE
    with pytest.raises(ValueError, match="different devices"):
        ref.run(lambda a, b: a, (torch.zeros(1), torch.zeros(1, device="meta")))
    with pytest.raises(ValueError, match="positive int"):
        ref.run(_softmax_body, (x,), block_size=0)
    with pytest.raises(ZeroDivisionError):
        ref.run(lambda: 1 / 0, (), block_size=3)
    assert [t.block_size for t in tl.tile(200)][0] == tl.DEFAULT_REF_BLOCK_SIZE


def test_ref_run_state_is_per_thread() -> None:
    seen: dict[str, int] = {}

    def worker() -> None:
        seen["thread"] = next(iter(tl.tile(100))).block_size

    def body() -> int:
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        return next(iter(tl.tile(100))).block_size

    assert ref.run(body, (), block_size=8) == 8
    assert seen["thread"] == tl.DEFAULT_REF_BLOCK_SIZE


# ---------------------------------------------------------------------------- mixed precision


def _addmm_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    m, k = a.size()
    n = b.size(1)
    out = torch.empty([m, n], dtype=a.dtype)
    for tm, tn in tl.tile([m, n]):
        acc = tl.zeros([tm, tn], dtype=torch.float32)
        for tk in tl.tile(k):
            acc = torch.addmm(acc, a[tm, tk], b[tk, tn])
        for tk in tl.tile(k):
            acc = acc + a[tm, tk].float() @ b[tk, tn]
        out[tm, tn] = acc.to(a.dtype)
    return out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ref_mode_matmuls_of_mixed_dtypes_promote_like_the_compiler(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(33, 70, generator=g).to(dtype)
    b = torch.randn(70, 20, generator=g).to(dtype)
    with pytest.raises(RuntimeError):  # plain eager torch refuses these
        torch.addmm(torch.zeros(33, 20), a, b)
    got = ref.run(_addmm_matmul, (a, b), block_size=16)
    expected = 2 * (a.double() @ b.double())
    torch.testing.assert_close(got.double(), expected, atol=0.25, rtol=2e-2)
    # outside ref.run, torch is untouched
    with pytest.raises(RuntimeError):
        torch.addmm(torch.zeros(33, 20), a, b)
    # and the compiler agrees with the oracle
    monkeypatch.delenv("TORCHSHIP_INTERPRET", raising=False)
    monkeypatch.setenv("TORCHSHIP_AUTOTUNE_EFFORT", "none")
    compiled = ts.kernel(_addmm_matmul)(a, b)
    torch.testing.assert_close(compiled.double(), expected, atol=0.25, rtol=2e-2)


def _times_tunable(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    mult = tl.register_tunable("mult", [1, 3])
    for tm in tl.tile(x.size(0), block_size=tl.register_block_size(16, 32)):
        out[tm, :] = x[tm, :] * mult
    return out


def test_tunable_values_reach_ref_mode_and_compiled_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(37, 20)
    monkeypatch.delenv("TORCHSHIP_INTERPRET", raising=False)
    bound = ts.kernel(_times_tunable).bind((x,))
    assert bound.config_space.params["mult"] == [1, 3]
    for mult in (1, 3):
        expected = x * mult
        torch.testing.assert_close(ref.run(_times_tunable, (x,), tunables={"mult": mult}), expected)
        config = bound.config_space.default().replace(mult=mult)
        torch.testing.assert_close(bound.compile(config)(x), expected)
    torch.testing.assert_close(ref.run(_times_tunable, (x,)), x)  # first choice by default
