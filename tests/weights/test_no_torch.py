"""The numpy API, safe_open(framework="np") and the CLI work with torch hidden."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

from torchship.weights import numpy as ours_np

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # any "import torch" now raises ImportError
    import numpy as np
    import ml_dtypes
    import torchship.weights
    from torchship.weights import safe_open, SafetensorError
    from torchship.weights.numpy import save, save_file, load, load_file
    path = sys.argv[1]
    arrays = load_file(path)
    assert arrays["w"].tolist() == [[1.0, 2.0], [3.0, 4.0]], arrays
    assert arrays["h"].dtype == ml_dtypes.bfloat16
    save_file({"x": np.arange(3, dtype=np.int16)}, path + ".2")
    assert load(save({"y": np.ones(2, np.uint8)}))["y"].tolist() == [1, 1]
    with safe_open(path + ".2", framework="np") as f:
        assert f.get_slice("x")[1:].tolist() == [1, 2]
    try:
        safe_open(path, framework="pt")
    except ImportError:
        pass
    else:
        raise AssertionError("framework='pt' must need torch")
    from torchship.weights.numpy import save_sharded
    shards = save_sharded({f"t{i}": np.full(100, i, np.float32) for i in range(4)}, path + ".d", 500)
    assert len(shards) == 4 and sorted(load_file(path + ".d")) == ["t0", "t1", "t2", "t3"]
    from torchship.cli import main
    assert main(["weights", "verify", path]) == 0
    assert main(["weights", "verify", path + ".d"]) == 0
    assert main(["weights", "scan", path, path + ".d"]) == 0
    print("OK", "torch" in sys.modules and sys.modules["torch"] is None)
    """
)


def test_numpy_api_without_torch(tmp_path) -> None:
    path = tmp_path / "a.safetensors"
    ours_np.save_file({"w": np.array([[1, 2], [3, 4]], np.float32), "h": np.ones(2, np.float32).astype("bfloat16")}, path)
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "OK True"
