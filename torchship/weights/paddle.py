"""Where ``safetensors.paddle`` would be: refused with a clear error at import.

Paddle tensors would have to pass through numpy, where paddle's bfloat16 arrives as uint16
(safetensors' own paddle adapter reads raw pointers instead), and there is no paddle here to
test an adapter against; load and save with ``torchship.weights.numpy`` and convert with
``paddle.to_tensor`` / ``tensor.numpy()``.

Example:
    >>> import torchship.weights.paddle  # doctest: +SKIP
    Traceback (most recent call last):
    torchship.weights.frameworks.FrameworkMissingError: torchship.weights.paddle is not offered: ...
"""

from __future__ import annotations

from torchship.weights.frameworks import refuse

raise refuse(__name__, "paddle's bfloat16 does not survive the numpy route this adapter would take")
