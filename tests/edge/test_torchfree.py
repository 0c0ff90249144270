"""The runtime runs in a fresh virtual environment that has no torch at all."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import numpy as np
import torch

from examples.models.zoo import tiny_transformer  # noqa: I001
from tests.edge._util import ROOT, rel_err
from torchship.edge import export

# what the numpy-only install needs, linked from this environment's site-packages
_DEPS = ("numpy", "numpy.libs", "ml_dtypes", "rich", "pygments", "markdown_it", "mdurl")

_CHILD = """
import sys
import numpy as np
try:
    import torch  # noqa: F401
    raise SystemExit("torch is importable in the fresh venv")
except ImportError:
    pass
from torchship.edge.runtime import load
prog = load(sys.argv[1])
np.save(sys.argv[2], prog.method("encode")(np.load(sys.argv[3]), np.load(sys.argv[4])))
assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
print("ok", sys.prefix)
"""


def _fresh_venv(path: Path) -> Path:
    """A new venv (no system site-packages, no pip) with torchship + numpy-side deps only."""
    venv.EnvBuilder(with_pip=False, system_site_packages=False, symlinks=True).create(path)
    py = path / "bin" / "python"
    site = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    here = Path(sysconfig.get_paths()["purelib"])
    for dep in _DEPS:
        if (here / dep).exists():
            (site / dep).symlink_to(here / dep)
    pkg = site / "torchship_src"
    pkg.mkdir()
    (pkg / "torchship").symlink_to(ROOT / "torchship")  # the package only: no tests/, no examples/
    (site / "torchship.pth").write_text(str(pkg) + "\n")
    return py


def test_runtime_in_fresh_venv_without_torch(tmp_path: Path) -> None:
    model, inputs = tiny_transformer()
    prog = export(model, inputs, methods={"encode": (inputs, None)})
    path = prog.save(tmp_path / "tt.tsp")
    ids, mask = (x.numpy() for x in inputs)
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "mask.npy", mask)
    py = _fresh_venv(tmp_path / "venv")
    proc = subprocess.run(
        [str(py), "-I", "-c", _CHILD, str(path), str(tmp_path / "out.npy"), str(tmp_path / "ids.npy"), str(tmp_path / "mask.npy")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok") and str(tmp_path / "venv") in proc.stdout
    with torch.no_grad():
        ref = model.encode(*inputs).numpy()
    assert rel_err(np.load(tmp_path / "out.npy"), ref) <= 1e-5
    assert sys.prefix not in proc.stdout
