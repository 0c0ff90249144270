"""Demo step for the weights pillar: save, inspect, verify, reload and compare a small model.

The model is built here (a tiny language model with a tied embedding / output head, so shared
tensors are exercised). Without torch the step runs the same walk on a numpy state dict.

Example:
    >>> from rich.console import Console
    >>> run_step(Console(), Path("/tmp/demo"), quick=True)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from torchship.weights.cli import read_header, verify_path


def _tiny_model(quick: bool) -> Any:
    import torch
    from torch import nn

    vocab, dim = (256, 64) if quick else (4096, 256)

    class TinyLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, dim)
            self.blocks = nn.ModuleList(
                nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
                for _ in range(2)
            )
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, vocab, bias=False)
            self.head.weight = self.embed.weight  # tied

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            x = self.embed(ids)
            for block in self.blocks:
                x = x + block(x)
            return self.head(self.norm(x))

    torch.manual_seed(0)
    model = TinyLM().eval()
    model.blocks[0][1].weight.data = model.blocks[0][1].weight.data.to(torch.bfloat16).float()
    return model, vocab


def _summary(console: Console, path: Path) -> None:
    header = read_header(path)
    table = Table(title=f"inspect {path.name}", show_lines=False)
    for col in ("tensor", "dtype", "shape", "bytes"):
        table.add_column(col, justify="right" if col == "bytes" else "left")
    items = sorted(header.tensors.items(), key=lambda kv: kv[1].start)
    for key, info in items[:6]:
        table.add_row(key, info.dtype, str(list(info.shape)), f"{info.nbytes:,}")
    if len(items) > 6:
        table.add_row(f"... {len(items) - 6} more", "", "", "")
    console.print(table)
    console.print(f"metadata: {header.metadata}")


def _run_torch(console: Console, workdir: Path, quick: bool) -> list[tuple[str, bool, str]]:
    import torch

    from torchship.weights import safe_open
    from torchship.weights import torch as tw

    checks: list[tuple[str, bool, str]] = []
    model, vocab = _tiny_model(quick)
    path = workdir / "tiny_lm.safetensors"
    start = time.perf_counter()
    tw.save_model(model, path, metadata={"format": "pt", "model": "TinyLM"})
    checks.append(("save_model (tied head stored once)", path.is_file(), f"{path.stat().st_size:,} B in {1e3 * (time.perf_counter() - start):.1f} ms"))
    _summary(console, path)
    files, problems = verify_path(path)
    checks.append(("verify file", not problems, "valid" if not problems else problems[0]))

    fresh, _ = _tiny_model(quick)
    for p in fresh.parameters():
        p.data.zero_()
    missing, unexpected = tw.load_model(fresh, path)
    checks.append(("load_model into a fresh model", not missing and not unexpected, f"missing={missing} unexpected={unexpected}"))
    ids = torch.randint(0, vocab, (2, 16))
    with torch.no_grad():
        diff = (model(ids) - fresh(ids)).abs().max().item()
    checks.append(("outputs match after reload", diff == 0.0, f"max |diff| = {diff}"))

    with safe_open(path, framework="np") as f:
        arrays = f.get_tensors()
    same = all(np.array_equal(arrays[k], v.numpy()) for k, v in tw.load_file(path).items())
    checks.append(("numpy view equals torch view", same, f"{len(arrays)} tensors"))

    try:
        import safetensors.torch as peer
    except ImportError:
        checks.append(("safetensors reads our file", True, "safetensors not installed: skipped"))
    else:
        theirs = peer.load_file(str(path))
        ours = tw.load_file(path)
        equal = theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)
        checks.append(("safetensors reads our file identically", equal, f"{len(theirs)} tensors"))

    shard_dir = workdir / "sharded"
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "head.weight"}
    names = tw.save_sharded(state, shard_dir, max_shard_size=sum(v.nbytes for v in state.values()) // 3)
    reloaded = tw.load_file(shard_dir)
    ok = reloaded.keys() == state.keys() and all(torch.equal(reloaded[k], state[k]) for k in state)
    _, shard_problems = verify_path(shard_dir)
    checks.append((f"sharded save/load ({len(names)} shards + index)", ok and not shard_problems, "verify: valid" if not shard_problems else shard_problems[0]))
    return checks


def _run_numpy(workdir: Path) -> list[tuple[str, bool, str]]:
    from torchship.weights import numpy as nw

    rng = np.random.default_rng(0)
    state = {"w": rng.standard_normal((64, 32)).astype(np.float32), "b": np.arange(32, dtype=np.int64)}
    path = workdir / "arrays.safetensors"
    nw.save_file(state, path, metadata={"format": "np"})
    back = nw.load_file(path)
    _, problems = verify_path(path)
    return [
        ("numpy save/load round trip", all(np.array_equal(back[k], state[k]) for k in state), f"{len(state)} arrays"),
        ("verify file", not problems, "valid" if not problems else problems[0]),
    ]


def run_step(console: Console, workdir: Path, quick: bool) -> bool:
    """Walk the weights pillar end to end; print a short report; return True on success.

    Example:
        >>> run_step(Console(), Path(tempfile.mkdtemp()), quick=True)  # doctest: +SKIP
        True
    """
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        import torch  # noqa: F401
    except ImportError:
        console.print("[yellow]torch is not installed: running the numpy walk only")
        checks = _run_numpy(workdir)
    else:
        checks = _run_torch(console, workdir, quick) + _run_numpy(workdir)
    table = Table(title="weights: save -> inspect -> verify -> reload -> compare")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for name, ok, detail in checks:
        table.add_row(name, "[green]pass" if ok else "[red]FAIL", detail)
    console.print(table)
    return all(ok for _, ok, _ in checks)
