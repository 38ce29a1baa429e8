"""Item 5: overlayfs generate from the busybox prototype against a
Debian-minbase-sized one (``--debian DIR``, debootstrap, or a synthetic tree
of the same shape: ``prototypes.debian``), with the raw mount of both for
the kernel's share. An overlay mount never reads its lower layer, so the
library should not cost more for a bigger prototype."""

from __future__ import annotations

import os

import prototypes
from measure import Bench, Cycles, Ratio, interleaved, log, ms, settle
from rawops import RawOverlay

from rootfs_core import RootFS

TARGET = 1.2


def _debian(b: Bench) -> str:
    """The Debian-sized prototype: the one given, or one made now under the work directory."""
    if b.debian:
        debian = os.path.realpath(b.debian)
        b.results.prototypes["debian"] = f"{debian} ({prototypes.count_files(debian)} files)"
        return debian
    debian = f"{b.work}/proto-debian"
    log("5. building the Debian-sized prototype" + (" with debootstrap" if b.settings.debootstrap else ""))
    b.results.prototypes["debian"] = prototypes.debian(debian, try_debootstrap=b.settings.debootstrap)
    settle()
    return debian


def run(b: Bench) -> None:
    debian = _debian(b)
    os.makedirs(f"{b.work}/size")
    os.makedirs(f"{b.work}/size-raw")
    lib = RootFS(f"{b.work}/size", backend="overlayfs")
    raw_small, raw_big = RawOverlay(f"{b.work}/size-raw", b.busybox), RawOverlay(f"{b.work}/size-raw", debian)
    small, big, rsmall, rbig = Cycles(), Cycles(), Cycles(), Cycles()
    log(f"5. prototype size: busybox vs Debian-sized, {b.settings.size_reps} cycles each")
    interleaved(
        [
            (small, lambda: lib.generate(b.busybox), lib.remove),
            (big, lambda: lib.generate(debian), lib.remove),
            (rsmall, raw_small.generate, raw_small.remove),
            (rbig, raw_big.generate, raw_big.remove),
        ],
        b.settings.size_reps,
    )
    m = {
        "size.busybox.generate": ms(small.generate),
        "size.debian.generate": ms(big.generate),
        "size.busybox.cycle": ms(small.total),
        "size.debian.cycle": ms(big.total),
        "size.raw.busybox.generate": ms(rsmall.generate),
        "size.raw.debian.generate": ms(rbig.generate),
    }
    b.results.medians_ms |= m
    b.results.ratios.append(
        Ratio(
            "5",
            "overlayfs generate, Debian-sized / busybox prototype",
            m["size.debian.generate"] / m["size.busybox.generate"],
            TARGET,
            f"{m['size.debian.generate']:.2f} ms",
            f"{m['size.busybox.generate']:.2f} ms",
            f"generate+remove {m['size.debian.cycle'] / m['size.busybox.cycle']:.2f}x; raw mount "
            f"{m['size.raw.debian.generate'] / m['size.raw.busybox.generate']:.2f}x",
        )
    )
