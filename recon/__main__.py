"""``python -m recon``: the same as the ``recon`` command."""

import sys

from recon.console import recon

if __name__ == "__main__":
    sys.exit(recon())
