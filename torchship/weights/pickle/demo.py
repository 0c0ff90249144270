"""Demo step: convert an untrusted pickle checkpoint safely, and catch a malicious one.

Writes a clean ``torch.save`` checkpoint (a small model with a tied head, an optimizer state
and a few plain values) and a malicious one (the same weights plus a ``__reduce__`` payload
that would create a canary file), converts the clean one, compares it with
``torch.load(weights_only=True)``, shows the scan verdicts of both, shows that converting the
malicious one is refused, and proves the canary was never created.

Example:
    >>> from rich.console import Console
    >>> run_step(Console(), Path("/tmp/demo-pickle"), quick=True)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from torchship.weights.pickle.cli import print_reports
from torchship.weights.pickle.convert import ConvertError, convert
from torchship.weights.pickle.scan import scan


class _Payload:
    """Pickles as ``os.system(command)``: what a malicious checkpoint hides."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


def _checkpoints(workdir: Path, quick: bool, canary: Path) -> tuple[Path, Path, dict[str, Any]]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    dim = 32 if quick else 256
    model = nn.Sequential(nn.Embedding(100, dim), nn.LayerNorm(dim), nn.Linear(dim, 100, bias=False))
    model[2].weight = model[0].weight  # tied head
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    opt.step()
    checkpoint = {"state_dict": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 5,
                  "config": {"dim": dim, "vocab": 100}}
    clean = workdir / "pytorch_model.bin"
    torch.save(checkpoint, clean)
    evil = workdir / "untrusted_model.bin"
    torch.save({**checkpoint, "config": {"dim": dim, "hook": _Payload(f"touch '{canary}'")}}, evil)
    return clean, evil, checkpoint


def run_step(console: Console, workdir: Path, quick: bool) -> bool:
    """Run the pickle-conversion demo in ``workdir``; True when every check passed.

    Example: see module docstring.
    """
    import torch

    canary = workdir / "CANARY-payload-ran"
    clean, evil, _ = _checkpoints(workdir, quick, canary)
    ok = True

    console.print("[bold]1. scan[/] both checkpoints (nothing is executed)")
    reports = scan([clean, evil])
    print_reports(console, reports)
    ok &= [r.verdict for r in reports] == ["safe", "dangerous"]

    console.print("[bold]2. convert[/] the clean checkpoint with our own pickle machine")
    report = convert(clean, workdir / "model.safetensors")
    console.print(f"  {report.tensors} tensors -> {escape(report.outputs[0])} "
                  f"({report.nbytes / 1024:.0f} KiB, verified: {report.verified}); tied: "
                  f"{escape(str(report.tied))}; values: {escape(str(report.values))}")
    from torchship.weights.torch import load_file

    got = load_file(workdir / "model.safetensors")
    want = torch.load(clean, weights_only=True)  # the oracle, on the clean file only
    flat = {f"state_dict.{k}": v for k, v in want["state_dict"].items()}
    flat.update({f"optimizer.state.{i}.momentum_buffer": s["momentum_buffer"]
                 for i, s in want["optimizer"]["state"].items()})
    same = all(torch.equal(got.get(k, got.get(report.tied.get(k, ""))), v) for k, v in flat.items())
    console.print(f"  equal to torch.load(weights_only=True): {'[green]yes' if same else '[red]NO'}")
    ok &= same

    console.print("[bold]3. convert[/] the malicious checkpoint")
    try:
        convert(evil, workdir / "untrusted.safetensors")
        console.print("[red]  converted?! it should have been refused")
        ok = False
    except ConvertError as exc:
        console.print(f"  [green]refused:[/] {escape(str(exc))}")
    ok &= not (workdir / "untrusted.safetensors").exists()

    fired = canary.exists()
    console.print(f"[bold]4. canary[/] {escape(str(canary))}: "
                  + ("[red]CREATED - the payload ran" if fired else "[green]absent - nothing ran"))
    return ok and not fired
