"""The edge step of ``torchship demo``: export a model, run it in a process without torch.

Example:
    >>> from rich.console import Console
    >>> run_step(Console(), Path("/tmp/demo"), quick=True)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console

# the child blocks torch before anything is imported, so a hidden torch import would fail loudly
_CHILD = """
import sys, time
sys.modules["torch"] = None
import numpy as np
t0 = time.perf_counter()
from torchship.edge.runtime import load
prog = load(sys.argv[1])
t1 = time.perf_counter()
out = prog.method(sys.argv[2])(*[np.load(p, allow_pickle=False) for p in sys.argv[4:]])
t2 = time.perf_counter()
np.save(sys.argv[3], out)
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m] is not None)
print(f"{(t1 - t0) * 1e3:.1f} {(t2 - t1) * 1e3:.1f}")
"""


def run_step(console: Console, workdir: Path, quick: bool) -> bool:
    """Export the tiny transformer (two methods, dynamic sequence), run ``encode`` without torch,
    compare with eager PyTorch; True when they agree within 1e-5.

    Example:
        >>> run_step(Console(), Path("/tmp/w"), quick=True)  # doctest: +SKIP
        True
    """
    import torch
    from torch.export import Dim

    from torchship.edge import export

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root))
    from examples.models.zoo import tiny_transformer

    model, (ids, mask) = tiny_transformer()
    seq = Dim("seq", min=2, max=64 if quick else 128)
    dyn = ({1: seq}, {1: seq})
    t = time.perf_counter()
    prog = export(model, (ids, mask), dynamic_shapes=dyn, methods={"encode": ((ids, mask), dyn)})
    path = prog.save(workdir / "tiny_transformer.tsp")
    summary = prog.summary()["methods"]["encode"]
    console.print(
        f"exported TinyTransformer (forward + encode, seq 2..{seq.max}) in {time.perf_counter() - t:.1f} s: "
        f"{path.stat().st_size / 1024:.0f} KiB, {summary['instructions']} instructions, arena "
        f"{summary['arena_bytes'] / 1024:.0f} KiB vs {summary['tensor_bytes'] / 1024:.0f} KiB of tensors"
    )
    ok = True
    for length in (7, 23):
        torch.manual_seed(length)
        ids2 = torch.randint(0, 500, (2, length))
        mask2 = torch.ones(2, length, dtype=torch.long)
        mask2[1, length // 2 :] = 0
        files = [workdir / f"ids{length}.npy", workdir / f"mask{length}.npy"]
        np.save(files[0], ids2.numpy())
        np.save(files[1], mask2.numpy())
        out_file = workdir / f"out{length}.npy"
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path), "encode", str(out_file), *map(str, files)],
            capture_output=True, text=True, cwd=root, timeout=120,
        )
        if proc.returncode != 0:
            console.print(f"[red]torch-free run failed:[/]\n{proc.stderr[-2000:]}")
            return False
        load_ms, run_ms = proc.stdout.split()
        with torch.no_grad():
            ref = model.encode(ids2, mask2).numpy()
        got = np.load(out_file)
        err = float(np.abs(got - ref).max() / np.abs(ref).max())
        good = err <= 1e-5
        ok &= good
        mark = "[green]ok[/]" if good else "[red]MISMATCH[/]"
        console.print(f"  seq {length:>3}: run without torch (load {load_ms} ms, run {run_ms} ms), max rel err vs eager {err:.1e} {mark}")
    return ok
