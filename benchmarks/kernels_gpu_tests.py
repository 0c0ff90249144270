"""Run kernel test files on a GPU as well (GPU only).

Every ``ts.kernel`` defined at module level in the given test files is wrapped, then the files
run under pytest as usual. Each call of a wrapped kernel runs as the test wrote it (CPU
tensors, the Triton interpreter; the test's own assertions check that against torch). It then
runs again with the tensor arguments moved to CUDA (default config, no autotuning), and the
GPU outputs are compared with the interpreter's. NaN and inf positions must match exactly;
finite values must match within ``--rtol`` of the largest magnitude of each output. One line
per kernel; ``OUT/kernels_gpu_tests.json`` records every call, and each mismatching call is kept
in ``OUT/mismatches/`` (inputs and both outputs as ``.pt``, the GPU's Triton source as ``.py``).

Example:
    $ python benchmarks/kernels_gpu_tests.py --out bench-out tests/kernels/test_user_kernels_sweep8_pieces.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TORCHSHIP_AUTOTUNE_EFFORT", "none")


def _to(value: Any, device: str) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def _half_rtol(dtype: Any, rtol: float) -> float:
    """``rtol``, widened to two units in the last place for a 2-byte float output (the GPU's
    fast exp/division and the interpreter's numpy ones may round a half result either way)."""
    import torch

    if dtype in (torch.float16, torch.bfloat16):
        return max(rtol, 2 * torch.finfo(dtype).eps)
    return rtol


def compare(cpu: Any, gpu: Any, rtol: float) -> str | None:
    """None when ``gpu`` matches ``cpu`` (same structure, NaN/inf positions, values within
    ``rtol`` of each output's largest finite magnitude; two float16/bfloat16 ulps at least),
    else what differs.

    Example:
        >>> import torch
        >>> compare(torch.ones(3), torch.ones(3), 1e-5) is None
        True
    """
    import torch

    if isinstance(cpu, (tuple, list)):
        if not isinstance(gpu, (tuple, list)) or len(cpu) != len(gpu):
            return f"structure differs: {type(cpu).__name__} vs {type(gpu).__name__}"
        for i, (c, g) in enumerate(zip(cpu, gpu)):
            why = compare(c, g, rtol)
            if why is not None:
                return f"[{i}] {why}"
        return None
    if not isinstance(cpu, torch.Tensor):
        return None if cpu == gpu else f"{cpu!r} vs {gpu!r}"
    g = gpu.cpu()
    if g.shape != cpu.shape or g.dtype != cpu.dtype:
        return f"shape/dtype {tuple(g.shape)} {g.dtype} vs {tuple(cpu.shape)} {cpu.dtype}"
    if not (cpu.is_floating_point() or cpu.is_complex()):
        return None if torch.equal(g, cpu) else f"{int((g != cpu).sum())} integer elements differ"
    c64, g64 = cpu.double(), g.double()
    if not torch.equal(c64.isnan(), g64.isnan()) or not torch.equal(c64.isinf(), g64.isinf()) \
            or not torch.equal(c64[c64.isinf()], g64[g64.isinf()]):
        return "NaN/inf positions differ"
    fin = c64.isfinite()
    if not fin.any():
        return None
    scale = max(c64[fin].abs().max().item(), 1e-30)
    err = (c64[fin] - g64[fin]).abs().max().item() / scale
    if err <= _half_rtol(cpu.dtype, rtol):
        return None
    return f"max difference {err:.2e} of the largest magnitude ({cpu.dtype})"


class GpuTwin:
    """A kernel that, on each call, also runs on CUDA and records whether the outputs agree."""

    def __init__(self, kernel: Any, name: str, log: list[dict[str, Any]], rtol: float,
                 keep: Path | None = None) -> None:
        self._kernel, self._name, self._log, self._rtol = kernel, name, log, rtol
        self._keep = keep

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._kernel, attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self._kernel(*args, **kwargs)  # raises where the test expects a refusal
        rec: dict[str, Any] = {"kernel": self._name}
        try:
            gpu = self._kernel(*_to(args, "cuda"), **_to(kwargs, "cuda"))
            import torch

            torch.cuda.synchronize()
            why = compare(out, gpu, self._rtol)
            rec["verdict"] = "ok" if why is None else f"MISMATCH {why}"
            if why is not None and self._keep is not None:
                try:
                    self._save(rec, args, kwargs, out, gpu)
                except Exception as exc:  # noqa: BLE001 - keeping is best effort
                    rec["save_error"] = f"{type(exc).__name__}: {exc}"[:300]
        except Exception as exc:  # noqa: BLE001 - recorded
            rec["verdict"] = f"FAILED {type(exc).__name__}: {str(exc)[:300]}"
            rec["traceback"] = traceback.format_exc()[-1500:]
        self._log.append(rec)
        return out

    def _save(self, rec: dict[str, Any], args: Any, kwargs: Any, cpu: Any, gpu: Any) -> None:
        """Keep a mismatching call (inputs, both outputs, the GPU's Triton source) to study."""
        import torch

        assert self._keep is not None
        self._keep.mkdir(parents=True, exist_ok=True)
        stem = f"{self._name.rsplit('.', 1)[-1]}_{len(self._log)}"
        rec["saved"] = f"{stem}.pt"
        torch.save({"args": args, "kwargs": kwargs, "cpu": cpu, "gpu": _to(gpu, "cpu")},
                   self._keep / f"{stem}.pt")
        try:
            src = self._kernel.to_triton_code(args=_to(args, "cuda"), kwargs=_to(kwargs, "cuda"))
            (self._keep / f"{stem}.py").write_text(src)
        except Exception as exc:  # noqa: BLE001 - a reference-mode kernel has no source
            rec["source_error"] = f"{type(exc).__name__}: {exc}"[:300]


class _Wrap:
    """pytest plugin: wrap the collected modules' kernels."""

    def __init__(self, log: list[dict[str, Any]], rtol: float, keep: Path) -> None:
        self.log, self.rtol, self.keep = log, rtol, keep

    def pytest_collection_modifyitems(self, session: Any, config: Any, items: list[Any]) -> None:
        from torchship.kernels.runtime import Kernel

        for module in {item.module for item in items}:
            for name, obj in list(vars(module).items()):
                if isinstance(obj, Kernel):
                    setattr(module, name, GpuTwin(obj, f"{module.__name__}.{name}", self.log,
                                                  self.rtol, self.keep))


def main(argv: list[str] | None = None) -> int:
    """Run the files, print one verdict line per kernel, write the JSON.

    Example:
        >>> main(["--out", "bench-out", "tests/kernels/test_user_kernels_sweep8_pieces.py"])  # doctest: +SKIP
        0
    """
    import pytest

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+")
    p.add_argument("--out", default="bench-out")
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("-k", default="", help="pytest -k expression: run only these tests")
    opts = p.parse_args(argv)
    log: list[dict[str, Any]] = []
    out = Path(opts.out)
    extra = ["-k", opts.k] if opts.k else []
    code = pytest.main([*opts.files, "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *extra],
                       plugins=[_Wrap(log, opts.rtol, out / "mismatches")])
    by_kernel: dict[str, list[str]] = {}
    for rec in log:
        by_kernel.setdefault(rec["kernel"], []).append(rec["verdict"])
    bad = 0
    for name, verdicts in by_kernel.items():
        fails = [v for v in verdicts if v != "ok"]
        bad += bool(fails)
        print(f"{name}: {len(verdicts) - len(fails)}/{len(verdicts)} calls agree"
              + (f"; first problem: {fails[0]}" if fails else ""), flush=True)
    print(f"{len(by_kernel) - bad} of {len(by_kernel)} kernels agree on every call "
          f"(pytest exit {int(code)})", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernels_gpu_tests.json").write_text(json.dumps(
        {"files": opts.files, "pytest_exit": int(code), "calls": log}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
