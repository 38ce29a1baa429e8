"""rootfs-quilt: the bind-mount patchwork backend (entry point ``quilt``).

The hooks live in ``rootfs_quilt.backend``; this package exports nothing else,
so importing it for discovery stays cheap.
"""
