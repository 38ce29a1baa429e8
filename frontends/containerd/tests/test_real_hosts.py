"""The snapshotter where ``/`` is rshared (systemd) and other mount
namespaces hold copies of its roots (containers, services): a Remove
replies at once, and the deletion behind it refuses a root a neighbour
uses, keeps the data a neighbour's copy still shows, and finishes on a
later Cleanup once the neighbour is gone; nothing propagates to a slave
namespace, and nothing is left.

Each scenario runs in a process of its own, in a fresh mount namespace
whose ``/`` is rshared (``neighbours.in_shared_namespace``), because the
snapshotter is threaded and a thread cannot change namespaces alone; the
neighbours are its children, so they copy that namespace. It prints what
it saw as JSON, which the test judges.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import drop_empty_layer
from rootfs_core import RootFS
from rootfs_core.testing.checks import instance_mounts
from rootfs_core.testing.neighbours import in_shared_namespace

SCENARIO = r"""
import json, os, sys
from rootfs_core import RootFS
from rootfs_core.testing.neighbours import copier, holder, watcher
from rootfs_containerd.service import Snapshotter

base, backend, kind = sys.argv[1], sys.argv[2], sys.argv[3]
seen = {}
with open("/proc/self/mountinfo") as fh:
    seen["root_shared"] = any(l.split()[4] == "/" and "shared:" in l for l in fh)
with watcher() as slave:
    s = Snapshotter(base, backend, spares=2)
    try:
        for key in ("warm-1", "warm-2"):  # a stack prepared twice keeps a spare
            s.prepare(key, "", {})
        root = s.prepare("a", "", {})[0][1]
        seen["propagated"] = [p for p in slave.mounts_below(base) if p != base]
        instance = os.path.dirname(root)
        neighbour = holder(root, name="held") if kind == "holder" else copier()
        with neighbour as n:
            s.remove("a")
            s.settle()
            seen["row_gone"] = s.db.visible("a") is None
            seen["pending"] = len(s.db.removals())
            seen["mounted_here"] = os.path.ismount(root)
            seen["data_kept"] = os.path.isdir(os.path.join(instance, "upper"))
            if kind == "copier":  # (a chrooted holder sees its mounts from its own root)
                seen["copy_there"] = bool(n.mounts_below(root))
            else:
                seen["neighbour_reads"] = n.read().decode()
                seen["neighbour_writes"] = n.can_write()
            s.cleanup()  # a retry while the neighbour is there
            s.settle()
            seen["pending_with_neighbour"] = len(s.db.removals())
        s.cleanup()
        s.settle()
        seen["pending_after"] = len(s.db.removals())
        seen["instance_after"] = os.path.exists(instance)
        for key in ("warm-1", "warm-2"):
            s.remove(key)
    finally:
        s.close()
    seen["propagated_at_end"] = [p for p in slave.mounts_below(base) if p != base]
seen["instances"] = [i.id for i in RootFS(base, sweep=False).instances()]
print(json.dumps(seen))
"""


@pytest.mark.parametrize("kind", ["holder", "copier"])
def test_a_remove_waits_for_a_neighbour_in_a_shared_namespace(base_dir: str, backend: str, kind: str) -> None:
    argv = in_shared_namespace([sys.executable, "-c", SCENARIO, base_dir, backend, kind])
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    finally:  # the scenario's namespace is gone, and its mounts with it: what did it leave?
        rfs = RootFS(base_dir, sweep=False)
        left = [i.id for i in rfs.instances()]
        for instance in left:
            rfs.remove(instance, missing_ok=True)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["root_shared"], "the scenario did not run with / rshared"
    assert seen["propagated"] == [] and seen["propagated_at_end"] == []
    # The Remove replied at once; the deletion behind it waits.
    assert seen["row_gone"] and seen["pending"] == 1 and seen["pending_with_neighbour"] == 1
    assert seen["data_kept"]
    if kind == "holder":  # in use: refused, nothing touched
        assert seen["mounted_here"]
        assert seen["neighbour_reads"] and seen["neighbour_writes"]
    else:  # only a copy: unmounted here, its data kept while the copy lives
        assert seen["copy_there"] and not seen["mounted_here"]
    # The neighbour gone, the next Cleanup finishes it.
    assert seen["pending_after"] == 0 and not seen["instance_after"]
    assert seen["instances"] == [] and left == []
    assert instance_mounts(base_dir) == []
    drop_empty_layer(base_dir)
