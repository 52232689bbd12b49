"""The console scripts ``recon`` and ``recon-data``.

Each imports its command before it runs it, and those imports (torch, Lightning, W&B) take seconds: a Ctrl-C in
them, or anywhere a command does not handle it itself, ends the command as any interrupted command, in one line
with exit status 130, never with a ``KeyboardInterrupt`` traceback.
"""

from __future__ import annotations

import sys

EXIT_CTRL_C = 130  # 128 + SIGINT


def recon() -> int:
    """``recon …``: :func:`recon.cli.main`."""
    try:
        from recon.cli import main

        return main()
    except KeyboardInterrupt:
        return _interrupted("recon")


def recon_data() -> int:
    """``recon-data …``: :func:`recon.datamodules.cli.main`."""
    try:
        from recon.datamodules.cli import main

        return main()
    except KeyboardInterrupt:
        return _interrupted("recon-data")


def _interrupted(command: str) -> int:
    words = [arg for arg in sys.argv[1:] if not arg.startswith("-")][:1]
    print(f"{' '.join([command, *words])}: interrupted; exit status {EXIT_CTRL_C}", file=sys.stderr)
    return EXIT_CTRL_C
