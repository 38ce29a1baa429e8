"""rootfs-aufs: the ``aufs`` backend of rootfs (entry point ``rootfs_aufs.backend``).

aufs is not in mainline Linux, so this backend is only ever selected on a
kernel that carries the aufs patches; everywhere else it reports why not.
"""
