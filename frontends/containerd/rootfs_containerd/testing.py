"""What tests and benchmarks need to run a containerd of their own beside
rootfs-snapshotter: its configuration, and images written by hand."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile


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


def add_member(
    tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, mode: int = 0o644
) -> None:
    """A file (or, with ``kind``, a directory or other member without data)
    with a fixed mtime, so that a layer's digest depends on its content alone."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 1_700_000_000
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def tree_layer(tree: str) -> bytes:
    """An uncompressed layer holding the directory ``tree``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(tree)):
            tar.add(os.path.join(tree, name), arcname=name)
    return buf.getvalue()


def oci_archive(path: str, name: str, layers: list[bytes]) -> None:
    """An OCI image layout, as the tar ``ctr images import`` takes: image
    ``name`` of ``layers`` (uncompressed, bottom first) for linux/amd64,
    its command ``/bin/sh``."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes, media: str) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media, "digest": digest, "size": len(data)}

    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin:/sbin:/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": [blob(x, "application/vnd.oci.image.layer.v1.tar") for x in layers],
    }
    described = blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    described["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rpartition(":")[2],
    }
    index = {"schemaVersion": 2, "manifests": [described]}
    with tarfile.open(path, "w") as tar:
        for member, data in [
            ("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
            ("index.json", json.dumps(index).encode()),
            *((f"blobs/sha256/{d.split(':')[1]}", b) for d, b in blobs.items()),
        ]:
            add_member(tar, member, data)
