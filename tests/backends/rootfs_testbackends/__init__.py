"""Backends that exist only to test rootfs-core, found through real entry points
when this directory is put on ``sys.path`` (see tests/conftest.py)."""
