"""Fakes for the autotuner tests: a ConfigSpace/BoundKernel following the kernels contract,
candidates that crash / hang / compute wrong results, and a hand-written Triton kernel.

They live in an importable module because the harness rebuilds targets in spawned worker
processes (``tests.kernels.test_autotune_fakes``). The tests at the bottom check the fakes
themselves honour the ConfigSpace contract, so the autotuner tests rest on something sound.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import time
from typing import Any

import torch

from torchship.kernels.autotune.target import Target

BLOCKS = [16, 32, 64, 128, 256, 512, 1024]
WARPS = [1, 2, 4, 8, 16]
STAGES = [1, 2, 3, 4, 5]


class FakeConfig:
    """A value-equal, hashable config with to_dict/from_dict like the contract's Config."""

    def __init__(self, block: int = 64, warps: int = 4, stages: int = 2, mode: str = "ok"):
        self.block, self.warps, self.stages, self.mode = block, warps, stages, mode

    def to_dict(self) -> dict[str, Any]:
        return {"block": self.block, "warps": self.warps, "stages": self.stages, "mode": self.mode}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FakeConfig:
        return cls(**d)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeConfig) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.to_dict().items())))

    def __repr__(self) -> str:
        return f"FakeConfig({self.to_dict()})"


class FakeSpace:
    """block x warps x stages (245 configs); mode is always "ok" in the space itself."""

    def default(self) -> FakeConfig:
        return FakeConfig(64, 4, 2)

    def sample(self, rng: random.Random) -> FakeConfig:
        return FakeConfig(rng.choice(BLOCKS), rng.choice(WARPS), rng.choice(STAGES))

    def neighbors(self, config: FakeConfig, rng: random.Random, n: int = 8) -> list[FakeConfig]:
        out = []
        for _ in range(n):
            d = config.to_dict()
            for _knob in range(rng.choice([1, 1, 2])):
                knob = rng.choice(["block", "warps", "stages"])
                choices = {"block": BLOCKS, "warps": WARPS, "stages": STAGES}[knob]
                i = choices.index(d[knob]) + rng.choice([-1, 1])
                d[knob] = choices[min(max(i, 0), len(choices) - 1)]
            out.append(FakeConfig.from_dict(d))
        return out

    def encode(self, config: FakeConfig) -> list[float]:
        return [math.log2(config.block), math.log2(config.warps), float(config.stages)]

    def size(self) -> int:
        return len(BLOCKS) * len(WARPS) * len(STAGES)

    def enumerate(self):
        for b, w, s in itertools.product(BLOCKS, WARPS, STAGES):
            yield FakeConfig(b, w, s)

    def validate(self, config: FakeConfig) -> None:
        if config.block not in BLOCKS or config.warps not in WARPS or config.stages not in STAGES:
            raise ValueError(f"invalid fake config {config}")

    @property
    def params(self) -> dict[str, list]:
        return {"block": BLOCKS, "warps": WARPS, "stages": STAGES}


def cost(config: FakeConfig) -> float:
    """A smooth cost surface with an interaction; unique optimum at (256, 4, 3)."""
    b, w, s = math.log2(config.block) - 8, math.log2(config.warps) - 2, config.stages - 3
    return 0.1 * (1.0 + 0.3 * b * b + 0.2 * w * w + 0.1 * s * s + 0.15 * max(b * w, 0))


def flat_cost(config: FakeConfig) -> float:
    return 1.0


def slow_cost(config: FakeConfig) -> float:
    time.sleep(0.05)
    return cost(config)


class FakeBound:
    """BoundKernel stand-in computing ``2 * x``; ``config.mode`` makes it misbehave."""

    def __init__(self, x: torch.Tensor, source_hash: str = "fake0123456789abcdef") -> None:
        self.config_space = FakeSpace()
        self.source_hash = source_hash
        self.shape = tuple(x.shape)
        self.name = "fake_double"

    def key_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}

    def compile(self, config: FakeConfig):
        if config.mode == "compile_error":
            raise SyntaxError("fake compile error in generated code")

        def launch(x: torch.Tensor, *scalars: Any) -> torch.Tensor:
            if config.mode == "crash":
                os._exit(7)
            if config.mode == "segfault":
                import ctypes

                ctypes.string_at(0)  # reads address 0: SIGSEGV
            if config.mode == "hang":
                time.sleep(3600)
            if config.mode == "raise":
                raise RuntimeError("fake launch failure")
            if config.mode == "poison":  # what torch raises after a bad CUDA kernel
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            out = x * 2
            if config.mode == "wrong":
                out[-1] += 1.0  # one element off: must still be caught
            if config.mode == "scribble":
                x.zero_()  # corrupts its input: must be caught too
            return out

        return launch


class FakeTarget(Target):
    """Rebuilds a FakeBound on a seeded input in the worker (picklable)."""

    def __init__(self, n: int = 1000, seed: int = 0, compile_crash: bool = False) -> None:
        self.n, self.seed, self.compile_crash = n, seed, compile_crash
        self.device_type = "cpu"

    def build(self):
        g = torch.Generator().manual_seed(self.seed)
        x = torch.randn(self.n, generator=g)
        return FakeBound(x), (x,), {}


class TritonScaleBound:
    """A hand-written Triton kernel ``out = x * 3`` whose BLOCK comes from the config; the
    ``mode="nomask"`` variant forgets the mask's upper bound (wrong on ragged sizes, and the
    interpreter reads garbage or zeros there)."""

    def __init__(self, n: int) -> None:
        self.config_space = FakeSpace()
        self.source_hash = "tritonscale000000"
        self.n = n

    def key_dict(self) -> dict[str, Any]:
        return {"n": self.n}

    def compile(self, config: FakeConfig):
        os.environ["TRITON_INTERPRET"] = "1"
        import triton
        import triton.language as tl

        if config.mode == "nomask":

            @triton.jit
            def scale(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
                idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
                x = tl.load(x_ptr + idx, mask=idx < (n // BLOCK) * BLOCK, other=0.0)
                tl.store(out_ptr + idx, x * 3.0, mask=idx < n)

        else:

            @triton.jit
            def scale(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
                idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
                x = tl.load(x_ptr + idx, mask=idx < n, other=0.0)
                tl.store(out_ptr + idx, x * 3.0, mask=idx < n)

        block = config.block

        def launch(x: torch.Tensor) -> torch.Tensor:
            out = torch.empty_like(x)
            scale[(triton.cdiv(x.numel(), block),)](x, out, x.numel(), BLOCK=block)
            return out

        return launch


class TritonTarget(Target):
    def __init__(self, n: int = 1000) -> None:
        self.n = n
        self.device_type = "cpu"

    def build(self):
        x = torch.randn(self.n, generator=torch.Generator().manual_seed(1))
        return TritonScaleBound(self.n), (x,), {}


# -- the fakes honour the ConfigSpace contract -------------------------------------------------


def test_fake_space_contract() -> None:
    space, rng = FakeSpace(), random.Random(0)
    space.validate(space.default())
    every = list(space.enumerate())
    assert len(every) == space.size() == len(set(every))
    for _ in range(50):
        c = space.sample(rng)
        space.validate(c)
        for nb in space.neighbors(c, rng, n=4):
            space.validate(nb)
        assert FakeConfig.from_dict(c.to_dict()) == c
    best = min(every, key=cost)
    assert best.to_dict() == {"block": 256, "warps": 4, "stages": 3, "mode": "ok"}


class LuckyTimer:
    """Model timer whose first measurement of ``lucky`` is a fluke (far too fast)."""

    name = "lucky"

    def __init__(self, lucky: FakeConfig) -> None:
        self.lucky, self.seen = lucky, 0

    def prepare(self, device: Any) -> None:
        pass

    def measure(self, fn, config: FakeConfig) -> float:
        fn()
        if config == self.lucky:
            self.seen += 1
            return 0.001 if self.seen == 1 else 10.0
        return cost(config)


class BoostTimer:
    """Model timer of a card that boosts when cool: in a burst every config costs ``cost``,
    under sustained load ``throttled`` configs take twice as long (a power-hungry kernel)."""

    name = "boost"

    def __init__(self, throttled: list[FakeConfig], hot: bool = False) -> None:
        self.throttled, self.hot = throttled, hot

    def prepare(self, device: Any) -> None:
        pass

    def sustained(self) -> BoostTimer:
        return BoostTimer(self.throttled, hot=True)

    def measure(self, fn, config: FakeConfig) -> float:
        fn()
        return cost(config) * (2.0 if self.hot and config in self.throttled else 1.0)


class FlakyTimer:
    """Model timer that fails every measurement of ``flaky`` after the first."""

    name = "flaky"

    def __init__(self, flaky: FakeConfig) -> None:
        self.flaky, self.seen = flaky, 0

    def prepare(self, device: Any) -> None:
        pass

    def measure(self, fn, config: FakeConfig) -> float:
        fn()
        if config == self.flaky:
            self.seen += 1
            if self.seen > 1:
                raise RuntimeError("unspecified launch failure (flaky)")
        return cost(config)
