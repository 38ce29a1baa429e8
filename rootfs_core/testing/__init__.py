"""Test support shipped with rootfs-core, for our backends and everyone else's.

- ``fixtures``: pytest fixtures (``leak_guard``, ``base_dir``, ``prototype``,
  ``busybox_prototype``) registered through the ``pytest11`` entry point.
- ``faults``: ``FaultySyscalls`` (fail the N-th call) and ``FakeMounts``.
- ``checks``: the mount table and a prototype checksum.
- ``prototypes``: a tiny prototype with every kind of file.
- ``runc``: a runc bundle around a generated root, and running it.
- ``neighbours``: processes in other mount namespaces that hold or copy a
  root (as containers and services do on real hosts).
"""
