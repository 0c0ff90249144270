"""``torchship edge export | run | inspect`` end to end."""

from __future__ import annotations

import numpy as np
import torch

from examples.models.zoo import tiny_transformer  # noqa: I001
from tests.edge._util import ROOT, rel_err
from torchship.cli import main


def test_export_run_inspect(tmp_path, capsys) -> None:
    out = tmp_path / "tt.tsp"
    rc = main(["edge", "export", f"{ROOT}/examples/models/zoo.py:tiny_transformer", "-o", str(out),
               "--dynamic", "seq=2..32@0:1,1:1", "--method", "encode", "--quantize", "int8"])
    assert rc == 0 and out.exists()
    text = capsys.readouterr().out
    assert "method encode" in text and "seq in [2, 32]" in text and "dequantize" in text
    model, _ = tiny_transformer()
    ids = torch.randint(0, 500, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    np.save(tmp_path / "ids.npy", ids.numpy())
    np.save(tmp_path / "mask.npy", mask.numpy())
    rc = main(["edge", "run", str(out), "--method", "encode", "--input", str(tmp_path / "ids.npy"),
               "--input", str(tmp_path / "mask.npy"), "-o", str(tmp_path / "emb.npy")])
    assert rc == 0
    with torch.no_grad():
        ref = model.encode(ids, mask).numpy()
    assert rel_err(np.load(tmp_path / "emb.npy"), ref) <= 2e-2  # int8 weights
    assert main(["edge", "inspect", str(out)]) == 0
    assert "arena (planned)" in capsys.readouterr().out
    # the weights pillar reads the weights section of a program file (shared contract)
    assert main(["weights", "inspect", str(out)]) == 0
    assert "layers.0.qkv.weight.int8" in capsys.readouterr().out


def test_run_reports_bad_file(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.tsp"
    bad.write_bytes(b"TSHPPROG" + bytes(40))
    assert main(["edge", "inspect", str(bad)]) == 1
    assert main(["edge", "run", str(bad)]) == 1
    assert "version 0" in capsys.readouterr().out
