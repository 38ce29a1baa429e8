import sys

from rootfs_containerd.server import main

sys.exit(main())
