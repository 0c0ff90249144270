"""``python -m torchship``: the same CLI as the ``torchship`` command.

Example:
    $ python -m torchship --help
"""

from __future__ import annotations

from torchship.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
