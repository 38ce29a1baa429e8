"""``python -m rootfs_core``: the ``rootfs`` command."""

import sys

from rootfs_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
