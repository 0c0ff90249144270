"""``torchship kernels autotune|cache`` end to end, on a user file with a contract-shaped
kernel object (the fake BoundKernel) so it runs without the compiler."""

from __future__ import annotations

import json
import textwrap

import pytest

from torchship.cli import main

USER_FILE = textwrap.dedent(
    '''
    import torch
    from tests.kernels.test_autotune_fakes import FakeBound


    class Kernel:  # what @ts.kernel returns, as far as the CLI needs it
        def __init__(self, fn):
            self.fn = fn

        def bind(self, args):
            return FakeBound(args[0], source_hash="userfile00000001")


    def double(x: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
        return x * scale


    double = Kernel(double)
    '''
)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("TORCHSHIP_CACHE_DIR", str(d))
    return d


def test_autotune_command_prints_top_configs_plots_and_caches(tmp_path, cache_dir, capsys):
    user = tmp_path / "user_kernels.py"
    user.write_text(USER_FILE)
    png, log = tmp_path / "curve.png", tmp_path / "log.json"
    argv = ["kernels", "autotune", f"{user}::double", "--shape", "300", "--device", "cpu",
            "--max-evals", "6", "--strategy", "random", "--plot", str(png), "--log", str(log)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "top configs" in out and "best config" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(log.read_text())
    assert len(data["candidates"]) == 6
    assert all(c["status"] == "ok" for c in data["candidates"])  # run in worker processes
    # the winner is cached: the second run is a hit
    assert main(argv) == 0
    assert "cached winner" in capsys.readouterr().out
    # cache list / export / clear / import
    assert main(["kernels", "cache", "list"]) == 0
    listing = capsys.readouterr().out
    assert "double" in listing and "1 entries" in listing
    bundle = tmp_path / "bundle.json"
    assert main(["kernels", "cache", "export", str(bundle)]) == 0
    assert main(["kernels", "cache", "clear"]) == 0
    assert "removed 1" in capsys.readouterr().out
    assert main(["kernels", "cache", "import", str(bundle)]) == 0
    assert "imported 1" in capsys.readouterr().out


def test_autotune_command_errors_are_clear(tmp_path, cache_dir, capsys):
    user = tmp_path / "user_kernels2.py"
    user.write_text(USER_FILE)
    assert main(["kernels", "autotune", f"{user}::nope", "--shape", "8", "--device", "cpu"]) == 2
    assert "no kernel named 'nope' (kernels here: double)" in capsys.readouterr().out
    assert main(["kernels", "autotune", f"{user}::double", "--device", "cpu"]) == 2
    assert "give --shape" in capsys.readouterr().out
    assert main(["kernels", "autotune", f"{user}::double", "--shape", "8", "--shape", "9",
                 "--device", "cpu"]) == 2
    assert "1 --shape more than" in capsys.readouterr().out
    assert main(["kernels", "autotune", "missing.py::k"]) == 2
    assert "missing.py: no such file" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main(["kernels", "cache", "import", str(bad)]) == 1
    assert "expected a JSON object" in capsys.readouterr().out


def test_code_command_prints_triton_for_a_config(capsys):
    argv = ["kernels", "code", "examples/kernels/add.py::add", "--device", "cpu",
            "--config", '{"block_sizes": [32, 64]}']
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "import triton" in out and "BLOCK_TN" in out
    assert "block_sizes=[32, 64]" in out  # the config it was generated for
    assert main(["kernels", "code", "examples/kernels/add.py::add", "--device", "cpu",
                 "--config", '{"num_warps": 3}']) == 2
    assert "num_warps=3 is not one of" in capsys.readouterr().err
