"""``python -m recon``: the same as the ``recon`` command."""

import sys

from recon.cli import main

if __name__ == "__main__":
    sys.exit(main())
