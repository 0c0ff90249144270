"""Pickle checkpoints -> safetensors with nothing executed, and a scanner for what they would run.

``convert(path, out=None)`` turns a ``torch.save`` checkpoint (zip, legacy stream or legacy tar,
or a directory of pickle shards) into safetensors through our own pickle machine, which only
knows data-only constructors; ``scan(paths)`` reports every global a file references with a
verdict (safe / suspicious / dangerous).

Example:
    >>> from torchship.weights.pickle import convert, scan
    >>> scan(["model.bin"])[0].verdict  # doctest: +SKIP
    'safe'
"""

from __future__ import annotations

from torchship.weights.pickle.containers import ContainerError, open_container
from torchship.weights.pickle.convert import ConvertError, ConvertReport, convert
from torchship.weights.pickle.scan import GlobalFinding, ScanReport, scan, scan_file
from torchship.weights.pickle.vm import Limits, Machine, PickleVMError

__all__ = [
    "ContainerError", "ConvertError", "ConvertReport", "GlobalFinding", "Limits", "Machine",
    "PickleVMError", "ScanReport", "convert", "open_container", "scan", "scan_file",
]
