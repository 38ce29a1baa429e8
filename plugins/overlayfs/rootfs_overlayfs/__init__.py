"""rootfs-overlayfs: generate roots as kernel overlay mounts (see ``backend``)."""
