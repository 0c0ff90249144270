"""The direct-launch path of CUDA launchers, checked on CPU against Triton's own specialisation.

A cached CUDA call skips ``JITFunction.run`` and calls the ``CompiledKernel`` that run returned
earlier for the same direct key. These tests build the real generated CUDA launchers for real
kernels and give them a stand-in for the jitted kernel whose ``kernel[grid](...)`` plays
Triton's role: it computes Triton's specialisation of the arguments with Triton's own
``native_specialize_impl`` and hands out one compiled object per specialisation (as Triton's
kernel cache does). Every launch, direct or not, must then run the compiled object of its
arguments' specialisation, with the same arguments and grid the ``kernel[grid]`` path passes.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

import torchship as ts
from torchship.kernels.backends.triton import launcher as L


@ts.kernel
def add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        out[t] = x[t] + y[t]
    return out


@ts.kernel
def softmax(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for tm in ts.tile(x.size(0)):
        row = x[tm, :].to(torch.float32)
        e = torch.exp(row - row.amax(dim=1, keepdim=True))
        out[tm, :] = (e / e.sum(dim=1, keepdim=True)).to(x.dtype)
    return out


@ts.kernel
def shift(x: torch.Tensor, k: int, s: float) -> torch.Tensor:
    out = torch.empty_like(x)
    for t in ts.tile(x.size(0)):
        out[t] = x[t] * s + k
    return out


def _spec(value: Any) -> Any:
    """Triton's specialisation of one runtime argument (the CUDA backend uses the base rules)."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    return native_specialize_impl(BaseBackend, value, False, True, True)


class FakeCompiled:
    """What ``JITFunction.run`` returns: records the direct launches made through ``run``."""

    def __init__(self, spec: Any, log: list[Any]) -> None:
        self.spec = spec
        self.function = object()
        self.packed_metadata = (4, 1, 0)
        self.log = log

    def run(self, gx: int, gy: int, gz: int, stream: Any, function: Any, packed: Any,
            launch_metadata: Any, enter: Any, exit_: Any, *args: Any) -> None:
        assert function is self.function and packed is self.packed_metadata
        assert stream == "stream-of-7" and (launch_metadata, enter, exit_) == (None, None, None)
        self.log.append(("direct", self, (gx, gy, gz), args))


class FakeJit:
    """Stands in for the ``triton.jit`` kernel: one compiled object per specialisation."""

    def __init__(self, fn: Any, consts: list[str]) -> None:
        self.fn = fn
        self.consts = consts
        self.cache: dict[Any, FakeCompiled] = {}
        self.log: list[Any] = []
        self.seen: set[Any] = set()

    def __getitem__(self, grid: tuple[int, ...]) -> Any:
        def run(*args: Any, **kw: Any) -> FakeCompiled:
            from triton import knobs

            consts = tuple(kw[n] for n in self.consts)
            spec = (tuple(_spec(a) for a in args), consts, knobs.runtime.debug)
            compiled = self.cache.setdefault(spec, FakeCompiled(spec, self.log))
            self.log.append(("run", compiled, grid + (1,) * (3 - len(grid)), args + consts))
            return compiled

        return run


@ts.kernel
def mm(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = torch.empty(x.size(0), y.size(1), dtype=x.dtype)
    for tm, tn in ts.tile([x.size(0), y.size(1)]):
        acc = ts.zeros([tm, tn], dtype=torch.float32)
        for tk in ts.tile(x.size(1)):
            acc += x[tm, tk] @ y[tk, tn]
        out[tm, tn] = acc.to(x.dtype)
    return out


def _launchers(kernel: Any, args: tuple[Any, ...],
               **knobs: Any) -> tuple[Any, Any, Any, list[str]]:
    """(direct launcher, plain launcher, fake kernel, captured names) for the kernel's site."""
    bound = kernel.bind(args)
    config = bound.config_space.default()
    if knobs:
        from torchship.kernels.config import Config

        config = Config.from_dict(config.to_dict() | knobs)
    launch = bound._trace[0]
    launch.order_slot = bound._slots()[1].get(launch.index)
    source, cg = L.generate(launch, config, bound._reduction_index(launch), "kern",
                            config.indexing, "cuda")
    ns: dict[str, Any] = {}
    # from its file: @triton.jit helpers of the source (a NaN-propagating max) read it back
    exec(compile(source, str(L._write_module(source)), "exec"), ns)
    consts = list(cg.constexprs)
    names = [p.name for p in cg.used_args] + consts
    fake = FakeJit(ns["kern"], consts)
    assert L._kernel_params(fake) == names
    direct_src = L.build_launcher(launch, cg, config, "cuda", 132, names)
    plain_src = L.build_launcher(launch, cg, config, "cuda", 132, None)
    direct = L.make_launch(direct_src, fake, "direct",
                           L.direct_namespace(fake, (lambda: 7, lambda dev: f"stream-of-{dev}")))
    plain = L.make_launch(plain_src, fake, "plain")
    return direct, plain, fake, bound.parsed.sites[0].captured


def _site_values(captured: list[str], values: dict[str, Any], a: tuple[Any, ...]) -> Any:
    return a, None, tuple(values[n] for n in captured)


def _check_same_launch(direct: Any, plain: Any, fake: FakeJit, site: Any) -> str:
    """Launch through both launchers; the direct one must run the compiled object of the
    arguments' own specialisation, with the plain launcher's arguments and grid."""
    plain(*site)
    kind_p, compiled_p, grid_p, args_p = fake.log.pop()
    assert kind_p == "run"
    n = len(fake.log)
    direct(*site)
    (kind, compiled, grid, args), = fake.log[n:]
    del fake.log[n:]
    assert grid == grid_p and len(args) == len(args_p)
    assert all(x is y or x == y for x, y in zip(args, args_p))
    assert compiled is compiled_p  # the same specialisation as Triton's own run picked
    return kind


def test_direct_launches_follow_triton_specialisation() -> None:
    rng = random.Random(0)
    direct, plain, fake, captured = _launchers(add, (torch.randn(40), torch.randn(40)))
    base = torch.randn(4096)
    kinds = []
    # sizes around 1 and multiples of 16, pointer offsets 0..4 floats, strides 1 and 2
    for _ in range(300):
        n = rng.choice([1, 2, 15, 16, 17, 32, 100, 1024])
        step = rng.choice([1, 1, 2])
        ox, oy = rng.choice([0, 1, 4]), rng.choice([0, 2, 4])
        x = base[ox:ox + n * step:step]
        y = base[oy:oy + n]
        out = torch.empty(n)[:]
        site = _site_values(captured, {"x": x, "y": y, "out": out}, (n,))
        kinds.append(_check_same_launch(direct, plain, fake, site))
    assert kinds.count("direct") > 200  # repeated specialisations do go direct
    assert 4 < len(fake.cache) <= 48  # and new ones (==1, %16, misaligned) compile anew


def test_constexpr_values_are_part_of_the_key() -> None:
    direct, plain, fake, captured = _launchers(softmax, (torch.randn(3, 40),))
    kinds = []
    for cols in (40, 40, 17, 17, 64, 64, 65, 65, 40):  # padded block 64, 32, 64, 128, 64
        x = torch.randn(5, cols)
        site = _site_values(captured, {"x": x, "out": torch.empty_like(x)}, (5,))
        kinds.append(_check_same_launch(direct, plain, fake, site))
    # the first sight of each (alignment, ==1, %16, R_X1) combination goes through run
    assert kinds[1] == kinds[3] == kinds[-1] == "direct"
    assert {c.spec[1][0] for c in fake.cache.values()} == {32, 64, 128}  # R_X1


def test_ints_outside_i32_and_floats() -> None:
    direct, plain, fake, captured = _launchers(shift, (torch.randn(20), 3, 0.5))
    x = torch.randn(20)
    out = torch.empty_like(x)
    for k, s in ((3, 0.5), (3, 2.5), (2**40, 0.5), (2**40, 0.5), (-(2**33), 1.0), (16, 0.5)):
        site = _site_values(captured, {"x": x, "out": out, "k": k, "s": s}, (20,))
        kind = _check_same_launch(direct, plain, fake, site)
        if abs(k) >= 2**31:
            assert kind == "run"  # i64 ints always take Triton's own path
    assert direct(*_site_values(captured, {"x": x, "out": out, "k": 3, "s": 7.0}, (20,))) is None
    assert fake.log[-1][0] == "direct"  # a new float value: same fp32 kernel


def test_sizes_outside_i32_take_triton_path() -> None:
    direct, plain, fake, captured = _launchers(softmax, (torch.randn(3, 40),))
    for cols in (40, 2**31 + 16, 2**31 + 16, 40, 2**31 - 16, 2**31 - 16):
        x = torch.zeros(1, 1).expand(2, cols)  # no memory behind the big sizes
        out = torch.zeros(1, 1).expand(2, cols)
        site = _site_values(captured, {"x": x, "out": out}, (2,))
        kind = _check_same_launch(direct, plain, fake, site)
        assert kind == ("run" if cols > 2**31 else "direct" if cols in fake.seen else "run")
        fake.seen.add(cols)


def test_hooks_and_knobs_send_launches_through_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    from triton import knobs

    direct, plain, fake, captured = _launchers(add, (torch.randn(40), torch.randn(40)))
    x, y = torch.randn(64), torch.randn(64)
    site = _site_values(captured, {"x": x, "y": y, "out": torch.empty(64)}, (64,))
    assert [_check_same_launch(direct, plain, fake, site) for _ in range(2)] == ["run", "direct"]

    def hook(metadata: Any) -> None:
        pass

    enter = knobs.runtime.launch_enter_hook
    enter.add(hook)
    try:
        assert _check_same_launch(direct, plain, fake, site) == "run"
    finally:
        enter.remove(hook)
    assert _check_same_launch(direct, plain, fake, site) == "direct"
    monkeypatch.setattr(knobs.runtime, "debug", True)  # part of Triton's key: recompiles
    assert [_check_same_launch(direct, plain, fake, site) for _ in range(2)] == ["run", "direct"]
    assert len({c.spec[2] for c in fake.cache.values()}) == 2


def test_compile_launch_builds_the_direct_path_only_when_enabled(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bound = add.bind((torch.randn(8), torch.randn(8)))
    config = bound.config_space.default()
    launch = bound._trace[0]
    args = (launch, config, bound._reduction_index(launch), "cuda", "pointer", 132)
    compiled = L.compile_launch(*args)  # triton.jit needs no GPU until launched
    assert compiled.direct is not None and "_direct.get(key)" in compiled.launcher_source
    assert L._kernel_params(compiled.kernel)[-1] == "BLOCK_T"
    monkeypatch.setenv("TORCHSHIP_DIRECT_LAUNCH", "0")
    off = L.compile_launch(*args)
    assert off.direct is None and "_direct" not in off.launcher_source
    cpu = L.compile_launch(*args[:3], "cpu", "pointer", 4)  # the interpreter: never direct
    assert cpu.direct is None


def test_host_tensor_descriptors_go_direct() -> None:
    from triton.tools.tensor_descriptor import TensorDescriptor

    args = (torch.randn(64, 128), torch.randn(128, 64))
    if "tensor_descriptor" not in mm.bind(args).config_space.params["indexing"]:
        pytest.skip("this Triton has no tensor descriptors")
    direct, plain, fake, captured = _launchers(
        mm, args, indexing="tensor_descriptor", pid_type="persistent",
        block_sizes=[32, 32, 32], num_warps=4, num_stages=1)
    kinds = []
    for m, n, k in ((64, 64, 128), (64, 64, 128), (96, 32, 64), (96, 32, 64), (1, 32, 64),
                    (1, 32, 64)):
        values = {"x": torch.randn(m, k), "y": torch.randn(k, n), "out": torch.empty(m, n)}
        site = _site_values(captured, values, ((m, n),))
        kinds.append(_check_same_launch(direct, plain, fake, site))
    # repeated specialisations go direct, each on the compiled kernel Triton's own run picks
    assert kinds[1] == kinds[3] == kinds[5] == "direct", kinds
    direct(*site)
    kind, _, _, launched = fake.log[-1]
    descs = [a for a in launched if isinstance(a, TensorDescriptor)]
    assert kind == "direct" and len(descs) == 3  # x, y and out, built by the launcher
    assert [list(d.shape) for d in descs] == [[1, 64], [64, 32], [1, 32]]
    assert all(list(d.block_shape) == [32, 32] for d in descs)
