"""rootfs as a containerd proxy snapshotter (``rootfs-snapshotter``)."""
