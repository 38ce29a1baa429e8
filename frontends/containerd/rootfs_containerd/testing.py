"""What tests and benchmarks need to run a containerd of their own beside
rootfs-snapshotter: its configuration, everything under one directory."""

from __future__ import annotations


def private_containerd_config(top: str, address: str, snapshotter: str) -> str:
    """A containerd configuration with its root, state and sockets under
    ``top``, its API at ``address``, the CRI plugin off (no Kubernetes
    here), and rootfs-snapshotter at ``snapshotter`` as the proxy plugin
    ``rootfs``."""
    return f"""version = 2
root = "{top}/root"
state = "{top}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{address}"
[ttrpc]
  address = "{address}.ttrpc"
[debug]
  address = "{top}/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{top}/opt"
[proxy_plugins.rootfs]
  type = "snapshot"
  address = "{snapshotter}"
"""
