"""rootfs-fuse-overlayfs: roots made by the fuse-overlayfs program, even without privilege.

See ``backend``.
"""
