"""Inner tile loops: full blocks run without masks and the ragged tail with them; tensor
descriptors are created once per program; a pre-scaled masked load is not re-masked per
iteration; dot configs with too many values per thread are invalid on GPU."""

from __future__ import annotations

import math
import re

import pytest
import torch

import torchship as ts
from torchship.kernels import Config
from torchship.kernels.config import ConfigSpace


@ts.kernel
def matmul(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    m, k = x.size()
    n = y.size(1)
    out = torch.empty([m, n], dtype=x.dtype, device=x.device)
    for tm, tn in ts.tile([m, n]):
        acc = ts.zeros([tm, tn], dtype=torch.float32)
        for tk in ts.tile(k):
            acc = ts.dot(x[tm, tk], y[tk, tn], acc=acc)
        out[tm, tn] = acc.to(out.dtype)
    return out


@ts.kernel
def scaled_scores(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """Row sums of (q * scale) @ k over key blocks: q's masked load is scaled once."""
    m, d = q.size()
    n = k.size(1)
    out = torch.empty([m], dtype=torch.float32, device=q.device)
    for tm in ts.tile(m):
        qb = (q[tm, :].float() * scale).to(q.dtype)
        total = ts.zeros([tm], dtype=torch.float32)
        for tn in ts.tile(n):
            s = ts.dot(qb, k[:, tn])
            total = total + s.sum(dim=1)
        out[tm] = total
    return out


def _cfg(space: ConfigSpace, **knobs: object) -> Config:
    """The space's default with some knobs changed."""
    return Config.from_dict(space.default().to_dict() | knobs)


def _loop_bodies(src: str) -> list[str]:
    """The text of each `for ... in tl.range` loop at the K-loop indent (up to the next one)."""
    parts = re.split(r"\n(?=\s*# (?:full blocks|the ragged last block))", src)
    return parts[1:]


@pytest.mark.parametrize("k", [96, 97])
def test_full_blocks_unmasked_tail_masked_and_correct(k: int) -> None:
    g = torch.Generator().manual_seed(k)
    x = torch.randn(33, k, generator=g)
    y = torch.randn(k, 40, generator=g)
    cfg = _cfg(matmul.bind((x, y)).config_space, block_sizes=[16, 16, 32], num_warps=4,
               num_stages=1)
    src = matmul.to_triton_code(cfg, args=(x, y))
    full, tail = _loop_bodies(src)
    assert "tk_mask" not in full.split("tl.range", 2)[1].split("# the ragged")[0]
    assert "tk_mask" in tail
    assert "num_stages=1" in tail
    out = matmul.bind((x, y)).compile(cfg)(x, y)
    ref = (x.double() @ y.double()).float()
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pid_type", ["flat", "persistent", "persistent_ws"])
def test_tensor_descriptors_are_built_by_the_launcher(pid_type: str) -> None:
    x = torch.randn(64, 128)
    y = torch.randn(128, 64)
    bound = matmul.bind((x, y))
    if "tensor_descriptor" not in bound.config_space.params["indexing"]:
        pytest.skip("this Triton has no tl.make_tensor_descriptor")
    cfg = _cfg(bound.config_space, block_sizes=[32, 32, 32], num_warps=4, num_stages=1,
               pid_type=pid_type, indexing="tensor_descriptor")
    src = matmul.to_triton_code(cfg, args=(x, y))
    # shapes and strides are kernel arguments: every descriptor is a parameter the launcher
    # builds (no tl.make_tensor_descriptor in the kernel, no pointer or stride parameters)
    assert "tl.make_tensor_descriptor" not in src
    header = next(ln for ln in src.splitlines() if ln.startswith("def _matmul"))
    params = header.split("(", 1)[1].split(")")[0].split(", ")
    assert [p for p in params if p.endswith("_desc")] == ["x_desc", "y_desc", "out_desc"]
    assert not {"x", "y", "out", "x_stride0", "y_stride0"} & set(params)
    ws = "flatten=True, warp_specialize=True" in src
    assert ws == (pid_type == "persistent_ws")
    out = bound.compile(cfg)(x, y)
    assert torch.allclose(out, (x.double() @ y.double()).float(), atol=1e-4, rtol=1e-4)


def test_scaled_masked_load_not_remasked_in_loop() -> None:
    g = torch.Generator().manual_seed(1)
    q = torch.randn(37, 20, generator=g)  # d=20: padded to 32, masked load
    k = torch.randn(20, 45, generator=g)
    cfg = _cfg(scaled_scores.bind((q, k, 0.3)).config_space, block_sizes=[16, 16],
               num_warps=4, num_stages=1)
    src = scaled_scores.to_triton_code(cfg, args=(q, k, 0.3))
    assert "qb_masked" not in src
    out = scaled_scores.bind((q, k, 0.3)).compile(cfg)(q, k, 0.3)
    ref = ((q.double() * 0.3) @ k.double()).sum(dim=1).float()
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_dot_configs_with_too_many_values_per_thread_are_invalid_on_gpu() -> None:
    x = torch.randn(512, 512, dtype=torch.bfloat16)
    bound = matmul.bind((x, x))
    space = bound.config_space
    gpu = ConfigSpace(space.block_params, space.launches, space.reductions, space.tunables,
                      ["pointer"], "cuda")
    big = _cfg(gpu, block_sizes=[128, 256, 32], num_warps=1, num_stages=1)
    with pytest.raises(ts.KernelConfigError, match="values per thread"):
        gpu.validate(big)
    gpu.validate(_cfg(gpu, block_sizes=[128, 256, 32], num_warps=8, num_stages=1))
    # the default picks its warps after its blocks: the rule must not shrink it to 128x64
    # (it did once: 347 us instead of ~230 us for 4096^3 bf16 on H100)
    default = gpu.default()
    gpu.validate(default)
    assert default.block_sizes[:2] == [128, 128] and default.num_warps == 8
    assert all(math.prod(c.block_sizes[:2]) // (32 * c.num_warps) <= 256
               for c in (gpu.sample(__import__("random").Random(i)) for i in range(50)))


@pytest.mark.parametrize(("shape", "dtype", "blocks"), [
    ((4096, 4096, 4096), torch.bfloat16, [128, 256, 64]),  # 512 wide tiles: two waves+
    ((2048, 2048, 2048), torch.bfloat16, [128, 128, 64]),  # 128 wide tiles: too few
    ((4096, 4096, 4096), torch.float32, [64, 64, 64]),     # 4-byte operands keep 64s
])
def test_default_widens_large_half_precision_matmuls(shape, dtype, blocks) -> None:
    m, k, n = shape
    a, b = torch.empty(m, k, dtype=dtype), torch.empty(k, n, dtype=dtype)
    # a fresh kernel: a bound kernel's space keeps the sizes of its first binding
    space = ts.kernel(matmul.fn).bind((a, b)).config_space
    gpu = ConfigSpace(space.block_params, space.launches, space.reductions, space.tunables,
                      ["pointer"], "cuda")
    default = gpu.default()
    gpu.validate(default)
    assert default.block_sizes == blocks
    # the interpreter's default is unchanged by the GPU rule
    assert space.default().block_sizes == [32, 32, 32]


def _as_gpu(space: ConfigSpace) -> ConfigSpace:
    return ConfigSpace(space.block_params, space.launches, space.reductions, space.tunables,
                       ["pointer", "tensor_descriptor"], "cuda")


def test_dot_seeds_put_small_query_tiles_first_for_fused_attention() -> None:
    from examples.kernels.attention import attention
    from torchship.kernels.autotune.tuner import dot_seeds

    q = torch.randn(1, 2, 256, 64, dtype=torch.bfloat16)
    att = _as_gpu(attention.bind((q, q, q), {"causal": True}).config_space)
    default = att.default()
    assert default.block_sizes[0] == 128 and default.num_warps == 8  # 323 vs 345 µs at 4
    # a dot launch keeps at most 128 values of a block per thread: 128x64 on 1 warp hung
    # Triton's compiler past 10 s on an H100; 2 warps is the least for that block
    with pytest.raises(ts.KernelConfigError, match=r"values per thread \(> 128"):
        att.validate(default.replace(num_warps=1))
    att.validate(default.replace(num_warps=2))
    seeds = dot_seeds(att, default)
    assert seeds and all(att.is_valid(s) for s in seeds) and default not in seeds
    assert seeds[1].block_sizes[0] == 64 and seeds[1].num_warps == 4  # right after 4 stages
    # a plain matmul keeps the H100 matmul seeds first; narrow tiles come after them
    x = torch.randn(512, 512, dtype=torch.bfloat16)
    mm = _as_gpu(matmul.bind((x, x)).config_space)
    mm_seeds = dot_seeds(mm, mm.default())
    narrow = [i for i, s in enumerate(mm_seeds) if s.block_sizes[:2] in ([64, 128], [128, 64])]
    assert len(narrow) == 2 and min(narrow) > 2


def test_loop_seeds_vary_the_streamed_block_of_a_row_loop_kernel() -> None:
    from examples.kernels.cross_entropy import cross_entropy
    from torchship.kernels.autotune.tuner import loop_seeds

    logits = torch.randn(64, 32000, dtype=torch.bfloat16)
    labels = torch.randint(0, 32000, (64,))
    ce = _as_gpu(cross_entropy.bind((logits, labels)).config_space)
    default = ce.default()
    seeds = loop_seeds(ce, default)
    assert seeds and all(ce.is_valid(s) for s in seeds) and default not in seeds
    loop = next(i for i, bp in enumerate(ce.block_params) if not bp.grid)
    wide = [s for s in seeds if s.block_sizes[loop] == 2 * default.block_sizes[loop]]
    assert {s.num_stages for s in wide} == {1, 2}
    assert all(s.block_sizes[:loop] == default.block_sizes[:loop] for s in seeds)
    assert seeds[-1] == default.replace(load_eviction="first")
    assert ce.params["load_eviction"] == ["", "first", "last"]
    # a row kernel without an inner loop gets the evict_first seed alone
    from examples.kernels.sum import row_sum

    rows = _as_gpu(row_sum.bind((logits,)).config_space)
    assert loop_seeds(rows, rows.default()) == [rows.default().replace(load_eviction="first")]
    # kernels with a dot get dot_seeds instead; the CPU gets no seeds at all
    x = torch.randn(256, 256, dtype=torch.bfloat16)
    assert loop_seeds(_as_gpu(matmul.bind((x, x)).config_space), None) == []
    assert loop_seeds(cross_entropy.bind((logits, labels)).config_space, default) == []


def test_gpu_blocks_of_any_launch_keep_at_most_256_values_per_thread() -> None:
    from examples.kernels.cross_entropy import cross_entropy

    logits = torch.randn(64, 32000, dtype=torch.bfloat16)
    ce = _as_gpu(cross_entropy.bind((logits, torch.randint(0, 32000, (64,)))).config_space)
    # 4 x 4096 on one warp ran past the 10 s compile timeout on an H100
    with pytest.raises(ts.KernelConfigError, match="512 values per thread"):
        ce.validate(_cfg(ce, block_sizes=[4, 4096], num_warps=1, num_stages=1))
    ce.validate(_cfg(ce, block_sizes=[4, 4096], num_warps=2, num_stages=1))
    ce.validate(ce.default())
    rng = __import__("random").Random(0)
    assert all(math.prod(c.block_sizes) // (32 * c.num_warps) <= 256
               for c in (ce.sample(rng) for _ in range(50)))


def test_default_counts_a_bmm_batch_in_the_wide_tile_rule() -> None:
    """A bmm's batch is a fixed-block grid dim: its programs count towards the two waves
    (32 x 2048² bf16 on an H100: 128x256 tiles 904 µs vs 128x128 1003 µs)."""
    from examples.kernels.bmm import bmm

    for batch, size, wide in ((32, 2048, True), (16, 1024, True), (4, 256, False)):
        a = torch.empty(batch, size, size, dtype=torch.bfloat16)
        space = ts.kernel(bmm.fn).bind((a, a)).config_space
        assert space.launches[0].fixed_programs == batch
        gpu = ConfigSpace(space.block_params, space.launches, space.reductions,
                          space.tunables, ["pointer"], "cuda")
        assert gpu.default().block_sizes == [128, 256 if wide else 128, 64]
