"""Which Triton matmul structure comes closest to cuBLAS when the card is power-capped?
(issue 6, GPU only)

Hand-written Triton bf16 matmuls 4096^3 (128x256, 128x128, 256x128 and 128x256x128 tiles;
3 and 4 stages; 8 warps; grouped ordering): pointer loads, host-side tensor descriptors (TMA)
with one program per tile, and persistent programs over host descriptors with and without
Triton's ``flatten`` / ``warp_specialize``. Each variant that compiles is timed once in a
burst (after 0.2 s idle), then the faster half and ``torch.mm`` in 4 interleaved rounds after
2 s of back-to-back ``torch.mm`` (the card at its sustained, power-capped clock), with SM
clock, power and throttle reasons from ``nvidia-smi``. Writes ``OUT/kernels_probe_matmul.json``.

Example:
    $ python benchmarks/kernels_probe_matmul.py --out bench-out
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.tools.tensor_descriptor import TensorDescriptor  # noqa: E402

from benchmarks.matmul_timing import gpu_state  # noqa: E402
from torchship.kernels.autotune.timing import CudaEventTimer  # noqa: E402


@triton.jit
def _tile(tile_id, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    group = GROUP_M * num_pid_n
    gid = tile_id // group
    first_m = gid * GROUP_M
    size_m = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (tile_id % size_m)
    pid_n = (tile_id % group) // size_m
    return pid_m, pid_n


@triton.jit
def mm_persist(a_desc, b_desc, c_desc, M, N, K, BM: tl.constexpr, BN: tl.constexpr,
               BK: tl.constexpr, GROUP_M: tl.constexpr, NUM_SMS: tl.constexpr,
               WS: tl.constexpr, FLAT: tl.constexpr):
    start = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BM)
    num_pid_n = tl.cdiv(N, BN)
    k_tiles = tl.cdiv(K, BK)
    num_tiles = num_pid_m * num_pid_n
    for tile_id in tl.range(start, num_tiles, NUM_SMS, flatten=FLAT, warp_specialize=WS):
        pid_m, pid_n = _tile(tile_id, num_pid_m, num_pid_n, GROUP_M)
        om = pid_m * BM
        on = pid_n * BN
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for ki in range(k_tiles):
            ok = ki * BK
            a = a_desc.load([om, ok])
            b = b_desc.load([ok, on])
            acc = tl.dot(a, b, acc)
        c_desc.store([om, on], acc.to(tl.bfloat16))


@triton.jit
def mm_tma(a_desc, b_desc, c_desc, M, N, K, BM: tl.constexpr, BN: tl.constexpr,
           BK: tl.constexpr, GROUP_M: tl.constexpr, STAGES: tl.constexpr):
    num_pid_m = tl.cdiv(M, BM)
    num_pid_n = tl.cdiv(N, BN)
    pid_m, pid_n = _tile(tl.program_id(0), num_pid_m, num_pid_n, GROUP_M)
    om = pid_m * BM
    on = pid_n * BN
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for ki in tl.range(0, tl.cdiv(K, BK), num_stages=STAGES):
        ok = ki * BK
        acc = tl.dot(a_desc.load([om, ok]), b_desc.load([ok, on]), acc)
    c_desc.store([om, on], acc.to(tl.bfloat16))


@triton.jit
def mm_ptr(a, b, c, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
           GROUP_M: tl.constexpr):
    num_pid_m = tl.cdiv(M, BM)
    num_pid_n = tl.cdiv(N, BN)
    pid_m, pid_n = _tile(tl.program_id(0), num_pid_m, num_pid_n, GROUP_M)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, K, BK):
        x = tl.load(a + rm[:, None] * K + (k + rk)[None, :])
        y = tl.load(b + (k + rk)[:, None] * N + rn[None, :])
        acc = tl.dot(x, y, acc)
    tl.store(c + rm[:, None] * N + rn[None, :], acc.to(tl.bfloat16))


def main(argv: list[str] | None = None) -> int:
    """Compile, check and time every variant; write the JSON.

    Example:
        >>> main(["--out", "bench-out"])  # doctest: +SKIP
        0
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-out")
    opts = p.parse_args(argv)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    timer = CudaEventTimer(target_ms=40.0, host_floor=False)
    timer.prepare("cuda")
    nsm = torch.cuda.get_device_properties(0).multi_processor_count
    m = n = k = 4096
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=g)
    b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16, generator=g)
    c = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    ref = a.float() @ b.float()
    fns: dict[str, Any] = {"torch.mm": functools.partial(torch.mm, a, b)}
    for (bm, bn, bk), st in itertools.product(
            [(128, 256, 64), (128, 128, 64), (256, 128, 64), (128, 256, 128)], (3, 4)):
        ad = TensorDescriptor.from_tensor(a, [bm, bk])
        bd = TensorDescriptor.from_tensor(b, [bk, bn])
        cd = TensorDescriptor.from_tensor(c, [bm, bn])
        tiles = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
        tile = f"{bm}x{bn}x{bk} s{st}"
        variants = {
            f"tma {tile}": functools.partial(mm_tma[tiles], ad, bd, cd, m, n, k, BM=bm, BN=bn,
                                             BK=bk, GROUP_M=8, STAGES=st, num_warps=8),
            f"ptr {tile}": functools.partial(mm_ptr[tiles], a, b, c, m, n, k, BM=bm, BN=bn,
                                             BK=bk, GROUP_M=8, num_stages=st, num_warps=8),
        }
        for ws, flat in itertools.product((False, True), (False, True)):
            variants[f"persist {tile} ws{int(ws)} fl{int(flat)}"] = functools.partial(
                mm_persist[(nsm,)], ad, bd, cd, m, n, k, BM=bm, BN=bn, BK=bk, GROUP_M=8,
                NUM_SMS=nsm, WS=ws, FLAT=flat, num_stages=st, num_warps=8)
        for name, fn in variants.items():
            try:
                c.zero_()
                fn()
                torch.cuda.synchronize()
                assert ((c.float() - ref).norm() / ref.norm()).item() < 1e-2
                fns[name] = fn
            except Exception as exc:  # noqa: BLE001 - e.g. out of shared memory
                print("fail", name, str(exc).splitlines()[0][:150] if str(exc) else exc,
                      flush=True)
    burst = {}
    for name, fn in fns.items():
        torch.cuda.synchronize()
        time.sleep(0.2)
        burst[name] = timer.measure(fn, None) * 1e3
    keep = sorted(burst, key=burst.get)[: max(8, len(burst) // 2)]
    if "torch.mm" not in keep:
        keep.append("torch.mm")
    t0 = time.time()
    while time.time() - t0 < 2.0:
        for _ in range(20):
            torch.mm(a, b)
        torch.cuda.synchronize()
    hot: dict[str, list[float]] = {name: [] for name in keep}
    states = []
    for _ in range(4):
        for name in keep:
            hot[name].append(timer.measure(fns[name], None) * 1e3)
        states.append(gpu_state())
    med = {name: sorted(v)[len(v) // 2] for name, v in hot.items()}
    print(f"bf16 {m}x{n}x{k}, nvidia-smi after each hot round: {states}", flush=True)
    for name in sorted(burst, key=burst.get):
        h = f"hot {med[name]:8.1f} ({med['torch.mm'] / med[name]:.3f})" if name in med else ""
        print(f"  {name:34s} burst {burst[name]:8.1f} ({burst['torch.mm'] / burst[name]:.3f})"
              f" {h}", flush=True)
    result = {f"{m}x{n}x{k}": {"burst": burst, "hot": hot, "states": states}}
    (out / "kernels_probe_matmul.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
