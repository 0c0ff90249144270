"""Every example kernel against torch in float64, on fresh random ragged inputs with poisoned
outputs, in both CPU modes: reference mode (TORCHSHIP_INTERPRET=1) and compiled through the
Triton interpreter for several configs drawn from the kernel's ConfigSpace."""

from __future__ import annotations

import random
import zlib
from typing import Any

import pytest
import torch

from examples.kernels import EXAMPLES, load
from torchship.kernels import ref

CASES = [
    (example, variant)
    for example in EXAMPLES
    for variant in load(example).VARIANTS
]
CASE_IDS = [variant for _, variant in CASES]
N_CONFIGS = 3  # default + 2 sampled
MIN_BLOCK = 32  # interpreter cost: no tiny blocks


def fresh_seed() -> int:
    return random.SystemRandom().getrandbits(31)


def to_f64(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.double()
    return value


def check_close(
    got: Any, expected: Any, tol: dict[str, float], what: str
) -> None:
    """Compare (tuples of) tensors to a float64 reference; NaN (unwritten) always fails."""
    if isinstance(expected, tuple):
        assert isinstance(got, tuple) and len(got) == len(expected), f"{what}: got {type(got)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            check_close(g, e, tol, f"{what}[{i}]")
        return
    assert isinstance(got, torch.Tensor), f"{what}: expected a tensor, got {type(got).__name__}"
    assert got.shape == expected.shape, f"{what}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(
        got.double(), expected.double(), **tol, msg=lambda m: f"{what}: {m}"
    )


def run_reference(mod: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return mod.reference(*[to_f64(a) for a in args], **kwargs)


def stress_config(space: Any, base: Any) -> Any | None:
    """``base`` with the least common knobs switched on: every rollable reduction looped in
    its smallest chunk, persistent programs, non-pointer indexing, reversed loop orders.
    None when the space rejects that mix."""
    d = base.to_dict()
    for name, choices in space.params.items():
        if name.startswith("reduction_loops["):
            rolled = [c for c in choices if c is not None]
            if rolled:
                d["reduction_loops"][int(name[len("reduction_loops["):-1])] = min(rolled)
        elif name.startswith("loop_orders["):
            d["loop_orders"][int(name[len("loop_orders["):-1])] = choices[-1]
    if "persistent" in space.params.get("pid_type", []):
        d["pid_type"] = "persistent"
    other = [c for c in space.params.get("indexing", []) if c != "pointer"]
    if other:
        d["indexing"] = other[zlib.crc32(repr(d).encode()) % len(other)]
    cfg = type(base).from_dict(d)
    try:
        space.validate(cfg)
    except Exception:
        return None
    return cfg


def pick_configs(space: Any, n: int, seed: int) -> list[Any]:
    """``space.default()``, a sampled config and a :func:`stress_config` of another sample,
    (more samples when n > 3) -- all distinct, with tunable block sizes of at least MIN_BLOCK
    (or their largest choice, when smaller)."""
    floors = [
        min(MIN_BLOCK, max(choices))
        for name, choices in space.params.items()
        if name.startswith("block_sizes[")
    ]

    def big_enough(cfg: Any) -> bool:
        return all(b >= f for b, f in zip(cfg.block_sizes, floors))

    configs = [space.default()]
    rng = random.Random(seed)
    for _ in range(400):
        if len(configs) == n:
            break
        cfg = space.sample(rng)
        if len(configs) == 2:
            stressed = stress_config(space, cfg)
            cfg = stressed if stressed is not None else cfg
        if big_enough(cfg) and cfg not in configs:
            configs.append(cfg)
    return configs


# ---------------------------------------------------------------------------- reference mode


@pytest.mark.parametrize(("example", "variant"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_example_ref_mode(
    example: str, variant: str, dtype: torch.dtype, ref_mode: None, poison_empty: None
) -> None:
    mod = load(example)
    if dtype not in mod.DTYPES:
        pytest.skip(f"{example} does not take {dtype}")
    kernel, kwargs = mod.VARIANTS[variant]
    seed = fresh_seed()
    args = mod.make_inputs("test", dtype=dtype, seed=seed)
    got = kernel(*args, **kwargs)
    check_close(got, run_reference(mod, args, kwargs), mod.TOLERANCE[dtype], f"{variant} seed={seed}")


@pytest.mark.parametrize(("example", "variant"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("block_size", [16, 32, 128])
def test_example_ref_mode_block_size_independent(
    example: str, variant: str, block_size: int, poison_empty: None
) -> None:
    mod = load(example)
    kernel, kwargs = mod.VARIANTS[variant]
    seed = fresh_seed()
    args = mod.make_inputs("test", seed=seed)
    got = ref.run(kernel.fn, args, kwargs, block_size=block_size)
    check_close(
        got, run_reference(mod, args, kwargs), mod.TOLERANCE[torch.float32],
        f"{variant} block_size={block_size} seed={seed}",
    )


# ---------------------------------------------------------------------------- compiled mode


@pytest.mark.parametrize(("example", "variant"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("config_index", range(N_CONFIGS), ids=lambda i: f"cfg{i}")
def test_example_compiled_interpreter(
    example: str, variant: str, config_index: int, compiled_mode: None, poison_empty: None
) -> None:
    mod = load(example)
    kernel, kwargs = mod.VARIANTS[variant]
    seed = fresh_seed()
    args = mod.make_inputs("test", dtype=torch.float32, seed=seed)
    bound = kernel.bind(args, kwargs)
    configs = pick_configs(bound.config_space, N_CONFIGS, seed=zlib.crc32(variant.encode()))
    if config_index >= len(configs):
        pytest.skip(f"config space of {variant} has only {len(configs)} configs with blocks >= 32")
    config = configs[config_index]
    got = bound.compile(config)(*args, **kwargs)
    check_close(
        got, run_reference(mod, args, kwargs), mod.TOLERANCE[torch.float32],
        f"{variant} {config} seed={seed}",
    )


@pytest.mark.parametrize(
    ("example", "dtype"),
    [
        ("matmul", torch.float16),
        ("matmul", torch.bfloat16),
        ("bmm", torch.bfloat16),
        ("attention", torch.bfloat16),
        ("softmax", torch.float16),
        ("softmax", torch.bfloat16),
        ("layer_norm", torch.bfloat16),
        ("attention", torch.float16),
    ],
    ids=str,
)
def test_low_precision_compiled_interpreter(
    example: str, dtype: torch.dtype, compiled_mode: None, poison_empty: None
) -> None:
    mod = load(example)
    kernel, kwargs = next(iter(mod.VARIANTS.values()))
    seed = fresh_seed()
    args = mod.make_inputs("test", dtype=dtype, seed=seed)
    got = kernel(*args, **kwargs)
    assert got.dtype == dtype
    check_close(got, run_reference(mod, args, kwargs), mod.TOLERANCE[dtype], f"{example} seed={seed}")
