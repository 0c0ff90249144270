"""Shared helpers for the edge tests."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max |ref| (the issue's 'max relative error')."""
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert got.dtype == ref.dtype, (got.dtype, ref.dtype)
    return float(np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


def split_program(data: bytes) -> tuple[dict, bytes]:
    """(header JSON, weights bytes) of a program file, read as docs/edge-format.md says."""
    off, _, _, n = struct.unpack_from("<QIIQ", data, 8)
    return json.loads(data[32 : 32 + n]), data[off:]


def build_program(header: dict, weights: bytes, *, magic: bytes = b"TSHPPROG", version: int = 1,
                  flags: int = 0, align: int = 64) -> bytes:
    """Independent writer following docs/edge-format.md (for tampered-file tests)."""
    head = json.dumps(header).encode()
    off = -(-(32 + len(head)) // align) * align
    return (magic + struct.pack("<QIIQ", off, version, flags, len(head)) + head
            + bytes(off - 32 - len(head)) + weights)
