"""Item 7: rootfs's command line beside its peers'. One ``rootfs generate``
+ ``rootfs remove`` pair (overlayfs, probe cache warm) against the
create+mount+remove cycle of each peer installed here (``peer_clis``:
containerd's overlayfs snapshotter through ``ctr``, podman, buildah), on
the same prototype, interleaved in the same run. A peer that is not
installed is skipped with a note: nothing here installs one.

Command line against command line, since that is how the peers are used
from a script; each peer's cycle is at least two of its processes, where
rootfs's is two of its own.
"""

from __future__ import annotations

import os

from measure import Bench, Pair, Ratio, compared, log
from peer_clis import Buildah, Ctr, Peer, Podman

from items.cli import Cli

PEERS: tuple[type[Peer], ...] = (Ctr, Podman, Buildah)
TARGETS = {"buildah": 1.0}  # issue 15: a pair no slower than buildah's from+mount+rm


def run(b: Bench) -> None:
    base = f"{b.work}/peers-rootfs"  # beside the others, where the run's clean-up looks for instances
    os.makedirs(base)
    cli = Cli(b.work, base, b.warm_cache, backend="overlayfs")
    peers: list[Peer] = []
    try:
        for kind in PEERS:
            why = kind.missing()
            if why is not None:
                unchecked = "; its target is not checked" if kind.program in TARGETS else ""
                b.results.notes.append(f"7: {kind.program} skipped: {why}{unchecked}")
                continue
            log(f"7. peers: starting {kind.program}")
            peer = kind(f"{b.work}/peers/{kind.program}", b.busybox)
            peers.append(peer)
            peer.start()
        if not peers:
            log("7. peers: none installed")
            return
        reps = b.settings.peer_reps
        log(f"7. peers: rootfs generate+remove vs {', '.join(p.cycle for p in peers)}, {reps} cycles each")
        contenders: dict[str, Pair] = {"rootfs": (lambda: cli.generate(b.busybox), cli.remove)}
        contenders |= {p.program: (p.generate, p.remove) for p in peers}
        m = compared("peer", reps, **contenders)
        b.results.medians_ms |= m
        ours = m["peer.rootfs.cycle"]
        for peer in peers:
            theirs = f"peer.{peer.program}"
            halves = (
                f"generate / ({peer.making}) {m['peer.rootfs.generate'] / m[f'{theirs}.generate']:.2f}x, "
                f"remove / ({peer.removing}) {m['peer.rootfs.remove'] / m[f'{theirs}.remove']:.2f}x"
            )
            b.results.ratios.append(
                Ratio(
                    "7",
                    f"CLI generate+remove / {peer.cycle}",
                    ours / m[f"{theirs}.cycle"],
                    TARGETS.get(peer.program),
                    f"{ours:.1f} ms",
                    f"{m[f'{theirs}.cycle']:.1f} ms",
                    "; ".join(filter(None, (peer.version(), halves, peer.detail()))),
                )
            )
    finally:
        for peer in peers:
            left = peer.close()
            if left:
                b.results.notes.append(
                    f"7: {peer.program}'s own commands left {len(left)} mount(s) below {peer.top} "
                    f"(unmounted): {', '.join(left)}"
                )
