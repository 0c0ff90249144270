"""Every config in a kernel's ConfigSpace must compile and compute the same result: sample
many configs of several example kernels (and walk each knob on its own) in the interpreter,
against torch in float64 on fresh ragged inputs with poisoned outputs."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

from examples.kernels import load
from torchship.kernels import Config

# (example, variant, number of random configs)
SAMPLED = [
    ("softmax", "softmax", 6),
    ("layer_norm", "layer_norm", 5),
    ("matmul", "matmul", 5),
    ("attention", "attention_causal", 3),
    ("sum", "sum", 5),
    ("cross_entropy", "cross_entropy", 4),
    ("embedding", "embedding_rows", 3),
    ("welford", "var_mean", 3),
    ("bmm", "bmm", 3),
]


def _inputs(example: str, variant: str, aligned: bool = False) -> tuple[Any, Any, Any, tuple]:
    mod = load(example)
    kernel, kwargs = mod.VARIANTS[variant]
    args = mod.make_inputs("test", dtype=torch.float32, seed=random.getrandbits(31))
    return mod, kernel, kwargs, args


def _check(mod: Any, kwargs: dict[str, Any], args: tuple, got: Any, what: str) -> None:
    want = mod.reference(*[a.double() if a.is_floating_point() else a for a in args], **kwargs)
    got_t = got if isinstance(got, tuple) else (got,)
    want_t = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got_t, want_t):
        torch.testing.assert_close(g.double(), w.double(), **mod.TOLERANCE[torch.float32],
                                   msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize(("example", "variant", "n"), SAMPLED, ids=[s[1] for s in SAMPLED])
def test_sampled_configs_agree(example: str, variant: str, n: int, compiled_mode: None,
                               poison_empty: None) -> None:
    mod, kernel, kwargs, args = _inputs(example, variant)
    bound = kernel.bind(args, kwargs)
    space = bound.config_space
    rng = random.Random(random.getrandbits(31))
    configs = {space.sample(rng) for _ in range(n)}
    for cfg in configs:
        space.validate(cfg)
        _check(mod, kwargs, args, bound.compile(cfg)(*args, **kwargs), f"{variant} {cfg}")


@pytest.mark.parametrize("knob", ["pid_type", "l2_grouping", "loop_orders", "indexing"])
def test_grid_knobs_on_matmul(knob: str, compiled_mode: None, poison_empty: None) -> None:
    mod = load("matmul")
    kernel, kwargs = mod.VARIANTS["matmul"]
    # 16-byte aligned rows so tensor descriptors apply; ragged in every dim vs the blocks
    args = (torch.randn(75, 56), torch.randn(56, 68))
    bound = kernel.bind(args)
    space = bound.config_space
    base = space.default()
    for choice in space.params[knob if knob != "loop_orders" else "loop_orders[0]"]:
        if knob == "loop_orders":
            cfg = base.replace(loop_orders=[choice])
        elif knob == "l2_grouping":
            cfg = base.replace(l2_grouping=choice, loop_orders=[[1, 0]])
        else:
            cfg = base.replace(**{knob: choice})
        _check(mod, kwargs, args, bound.compile(cfg)(*args), f"{knob}={choice}")


def test_every_reduction_chunk_of_softmax(compiled_mode: None, poison_empty: None) -> None:
    mod, kernel, kwargs, args = _inputs("softmax", "softmax")
    bound = kernel.bind(args, kwargs)
    space = bound.config_space
    chunks = space.params["reduction_loops[0]"]
    assert None in chunks and len(chunks) > 2
    for chunk in chunks:
        for pid in ("flat", "persistent"):
            cfg = space.default().replace(reduction_loops=[chunk], pid_type=pid)
            _check(mod, kwargs, args, bound.compile(cfg)(*args), f"chunk={chunk} {pid}")


def test_tensor_descriptor_indexing_in_interpreter(compiled_mode: None,
                                                   poison_empty: None) -> None:
    mod = load("layer_norm")
    kernel, kwargs = mod.VARIANTS["layer_norm"]
    args = mod.make_inputs("test", dtype=torch.float32, seed=3)
    bound = kernel.bind(args, kwargs)
    if "tensor_descriptor" not in bound.config_space.params["indexing"]:
        pytest.skip("this Triton has no tensor descriptors")
    cfg = bound.config_space.default().replace(indexing="tensor_descriptor")
    _check(mod, kwargs, args, bound.compile(cfg)(*args, **kwargs), "tensor_descriptor")


@pytest.mark.parametrize("eviction", ["first", "last"])
def test_load_eviction_hints(eviction: str, compiled_mode: None, poison_empty: None) -> None:
    """``load_eviction`` puts Triton's cache hint on every ``tl.load`` (pointer and block
    pointer; tensor-descriptor loads take none). It is a GPU search knob (evict_first took
    var_mean / long_sum 4096^2 from 32 to 28 us on an H100); a config carrying it runs
    unchanged on CPU, where the space does not search it."""
    mod = load("cross_entropy")
    kernel, kwargs = mod.VARIANTS["cross_entropy"]
    args = mod.make_inputs("test", dtype=torch.float32, seed=5)
    bound = kernel.bind(args, kwargs)
    space = bound.config_space
    assert space.params["load_eviction"] == [""]
    assert "eviction_policy" not in bound.to_triton_code(space.default())
    for indexing in space.params["indexing"]:
        cfg = space.default().replace(indexing=indexing, load_eviction=eviction)
        space.validate(cfg)
        src = bound.to_triton_code(cfg)
        n_loads = src.count("tl.load(")
        assert n_loads or indexing == "tensor_descriptor"
        assert src.count(f'eviction_policy="evict_{eviction}"') == n_loads
        _check(mod, kwargs, args, bound.compile(cfg)(*args, **kwargs), f"{indexing} {eviction}")
        assert Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(Exception, match="load_eviction='lru'"):
        Config(load_eviction="lru")


def test_config_roundtrip_and_space_api() -> None:
    mod = load("matmul")
    kernel, _ = mod.VARIANTS["matmul"]
    bound = kernel.bind((torch.randn(64, 32), torch.randn(32, 48)))
    space = bound.config_space
    rng = random.Random(0)
    c = space.sample(rng)
    assert Config.from_dict(c.to_dict()) == c and hash(Config.from_dict(c.to_dict())) == hash(c)
    ns = space.neighbors(c, rng, n=6)
    assert ns and all(space.is_valid(x) and x != c for x in ns)
    assert len(space.encode(c)) == len(space.params)
    assert space.size() >= len(list(space.enumerate())) > 0
    assert "block_sizes[0]" in repr(space)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize(("example", "variant"), [("add", "add"), ("swiglu", "swiglu"),
                                                  ("layer_norm", "layer_norm"),
                                                  ("attention", "attention_causal")])
def test_half_types_in_the_interpreter(example: str, variant: str, dtype: torch.dtype,
                                       compiled_mode: None, poison_empty: None) -> None:
    """The interpreter has no bf16 arithmetic (numpy): the backend computes bf16 element-wise
    ops and dots in float32 there, rounding each result to bf16 like torch does."""
    mod = load(example)
    kernel, kwargs = mod.VARIANTS[variant]
    args = mod.make_inputs("test", dtype=dtype, seed=random.getrandbits(31))
    got = kernel(*args, **kwargs)
    want = mod.reference(*[a.double() for a in args], **kwargs)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, **mod.TOLERANCE[dtype])


def test_register_cap_knob(compiled_mode: None, poison_empty: None) -> None:
    """``maxnreg`` caps the registers of a thread (Triton's ``maxnreg`` option). It is searched
    on a GPU for fused dot kernels only (flash attention), seeded for 8-warp defaults, passed
    to the CUDA launch, and runs unchanged in the interpreter, which ignores it."""
    from torchship.kernels.autotune.tuner import dot_seeds
    from torchship.kernels.backends.triton import launcher as L
    from torchship.kernels.config import ConfigSpace

    def gpu_space(space: Any) -> ConfigSpace:
        return ConfigSpace(space.block_params, space.launches, space.reductions,
                           space.tunables, indexing=space.params["indexing"], device="cuda")

    mod, kernel, kwargs, args = _inputs("attention", "attention_causal")
    bound = kernel.bind(args, kwargs)
    assert bound.config_space.params["maxnreg"] == [None]
    gpu = gpu_space(bound.config_space)
    assert gpu.params["maxnreg"] == [None, 128]
    eight = gpu.default().replace(num_warps=8)
    assert dot_seeds(gpu, eight)[0] == eight.replace(maxnreg=128)
    assert all(c.maxnreg is None for c in dot_seeds(gpu, gpu.default().replace(num_warps=4)))
    mm = load("matmul").VARIANTS["matmul"][0].bind((torch.randn(64, 32), torch.randn(32, 48)))
    assert gpu_space(mm.config_space).params["maxnreg"] == [None]  # a plain dot: not searched

    cfg = bound.config_space.default().replace(maxnreg=128)
    bound.config_space.validate(cfg)
    assert Config.from_dict(cfg.to_dict()) == cfg and "maxnreg" not in Config().to_dict()
    _check(mod, kwargs, args, bound.compile(cfg)(*args, **kwargs), "maxnreg=128")
    launch = bound._trace[0]
    launch.order_slot = bound._slots()[1].get(launch.index)
    _, cg = L.generate(launch, cfg, bound._reduction_index(launch), "k", cfg.indexing, "cuda")
    assert "maxnreg=128" in L.build_launcher(launch, cg, cfg, "cuda", 132)
    assert "maxnreg" not in L.build_launcher(launch, cg, cfg, "cpu", 132)
    with pytest.raises(Exception, match="maxnreg=7"):
        Config(maxnreg=7)


def test_warp_specialised_programs_need_eight_warps() -> None:
    """Triton 3.6 failed to compile every 4-warp ``persistent_ws`` bmm tile for sm_90 (and no
    8-warp one): the GPU space rejects such configs with the reason, and never samples them."""
    from torchship.kernels.config import ConfigSpace
    from torchship.kernels.errors import KernelConfigError

    space = load("matmul").VARIANTS["matmul"][0].bind(
        (torch.randn(64, 32), torch.randn(32, 48))).config_space
    gpu = ConfigSpace(space.block_params, space.launches, space.reductions, space.tunables,
                      indexing=space.params["indexing"], device="cuda")
    ws = gpu.default().replace(pid_type="persistent_ws")
    gpu.validate(ws.replace(num_warps=8))
    with pytest.raises(KernelConfigError, match="persistent_ws' needs num_warps >= 8"):
        gpu.validate(ws.replace(num_warps=4))
    rng = random.Random(0)
    sampled = [gpu.sample(rng) for _ in range(300)]
    assert any(c.pid_type == "persistent_ws" for c in sampled)
    assert all(c.num_warps >= 8 for c in sampled if c.pid_type == "persistent_ws")
