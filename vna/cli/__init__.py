"""The admin command line: ``vna COMMAND …``.

Each group of commands lives in its own module and registers itself on ``app``; this module
only assembles them. Exit codes: 0 success, 1 something failed (a file rejected, a check
found problems), 2 bad usage or settings.
"""

from __future__ import annotations

import sys

from vna.cli import ae as _ae  # noqa: F401  (each import registers its commands)
from vna.cli import convert as _convert  # noqa: F401
from vna.cli import core as _core  # noqa: F401
from vna.cli import deid as _deid  # noqa: F401
from vna.cli import scu as _scu  # noqa: F401
from vna.cli import serve as _serve  # noqa: F401
from vna.cli.base import app


def main() -> None:
    """Console entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["app", "main"]
