"""What a root over a stack of layers costs, against the same overlay mounted
with the raw syscalls, at 1, 10 and 100 layers; and what a commit costs.

    python bench/layers.py                   # 1, 10 and 100 layers, then commit
    python bench/layers.py --counts 1 500    # others (overlay stacks at most 500)
    python bench/layers.py --commit-reps 0   # no commit
    python bench/layers.py --json            # {"stacks": [...], "commit": {...}}

Each layer sits at a path of 100 bytes (as image layers do under a store
directory) and holds a few files. The library's cycle is an overlayfs
generate over the stack and its remove; the raw cycle makes the backend's
layout (instance, upper, work, root) and mounts the same stack with the
same options, then unmounts and removes it: with mount(2) when its options
fit one page, and otherwise, as the backend does, with the new mount API
(fsopen, one fsconfig ``lowerdir+`` per layer, fsmount, move_mount):
``rawops.RawOverlay``, whose only library line is ``syscalls.new_mount``,
the bare syscalls in order.

For each count: the medians of the two cycles, interleaved, their ratio,
and each against 1 layer in the same run.

Commit: the library's cycle is an overlayfs generate, a known tree written
in the root (200 files of 4 KiB in 10 directories, by default), and a commit
into the layer store; the raw cycle is the same overlay made with the raw
syscalls (``rawops.RawOverlay``'s layout), the same writes, an umount, the
upper renamed into a directory of layers, and the rest of the instance
removed. Deleting the layer made (``remove_layer``, or a plain delete of
the raw one) is outside both timings. Medians of the two, interleaved, and
their ratio: the library's price for turning the upper into a portable
layer (walking it for private state, its journal, its record).

Nothing is asserted; everything made is removed, mount-safely (``hygiene``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import hygiene
from rawops import LIBC, RawOverlay

from rootfs_core import RootFS
from rootfs_core.testing.prototypes import make_tiny_prototype

PATH_LENGTH = 100


def make_layers(holder: str, prototype: str, count: int) -> list[str]:
    """The prototype, then ``count - 1`` layers at 100-byte paths, each with
    a file of its own and one replacing a file of the prototype."""
    layers = [prototype]
    for n in range(1, count):
        stem = os.path.join(holder, f"L{n:03d}-")
        path = stem + "x" * max(1, PATH_LENGTH - len(stem))
        os.makedirs(os.path.join(path, "etc"))
        for name, content in ((f"etc/layer{n}", b"layer\n"), ("etc/hostname", f"layer {n}\n".encode())):
            with open(os.path.join(path, name), "wb") as fh:
                fh.write(content)
        layers.append(path)
    return layers


def measure(base: str, layers: list[str], reps: int) -> dict[str, float | str]:
    rfs = RootFS(base, backend="overlayfs")
    raw = RawOverlay(base, *layers)
    rfs.remove(rfs.generate(*layers))  # warm: probe, base dir set-up
    raw.remove(raw.generate())
    lib_times, raw_times = [], []
    for _ in range(reps):
        started = time.perf_counter()
        rfs.remove(rfs.generate(*layers))
        lib_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        raw.remove(raw.generate())
        raw_times.append(time.perf_counter() - started)
    return {
        "raw_api": raw.api,
        "library_ms": statistics.median(lib_times) * 1e3,
        "raw_ms": statistics.median(raw_times) * 1e3,
    }


def write_tree(root: str, files: int, size: int) -> None:
    """The known tree a commit cycle writes: ``files`` files of ``size``
    bytes under ``bench/`` in ten directories."""
    content = b"x" * size
    top = os.path.join(root, "bench")
    os.mkdir(top)
    for d in range(min(10, files)):
        os.mkdir(os.path.join(top, f"d{d}"))
    for n in range(files):
        with open(os.path.join(top, f"d{n % 10}", f"f{n:04d}"), "wb") as fh:
            fh.write(content)


class RawCommit(RawOverlay):
    """A raw overlay taken apart into a layer: umount, the upper renamed
    into ``layers``, the rest of the instance removed (rmdir only)."""

    def __init__(self, base_dir: str, prototype: str, layers: str) -> None:
        super().__init__(base_dir, prototype)
        self.layers = layers

    def commit(self, inst: str) -> str:
        LIBC.umount(os.fsencode(inst + "/root"))
        layer = os.path.join(self.layers, os.path.basename(inst))
        os.rename(inst + "/upper", layer)
        os.rmdir(inst + "/root")
        os.rmdir(inst + "/work/work")
        os.rmdir(inst + "/work/index")
        os.rmdir(inst + "/work")
        os.rmdir(inst)
        return layer


def measure_commit(
    base: str, prototype: str, scratch: str, reps: int, files: int, size: int
) -> dict[str, float]:
    """Medians of the library's and the raw commit cycles, interleaved."""
    rfs = RootFS(base, backend="overlayfs")
    raw_layers = os.path.join(scratch, "raw-layers")
    os.mkdir(raw_layers)
    raw = RawCommit(scratch, prototype, raw_layers)

    def library_cycle() -> float:
        started = time.perf_counter()
        root = rfs.generate(prototype)
        write_tree(root, files, size)
        result = rfs.commit(root)
        elapsed = time.perf_counter() - started
        if result.id is not None:  # always, without a DEST
            rfs.remove_layer(result.id)
        return elapsed

    def raw_cycle() -> float:
        started = time.perf_counter()
        inst = raw.generate()
        write_tree(inst + "/root", files, size)
        layer = raw.commit(inst)
        elapsed = time.perf_counter() - started
        shutil.rmtree(layer)  # a plain directory now: nothing is mounted in it
        return elapsed

    library_cycle()  # warm: probe, base dir set-up, the layer store
    raw_cycle()
    lib_times, raw_times = [], []
    for _ in range(reps):
        lib_times.append(library_cycle())
        raw_times.append(raw_cycle())
    library_ms = statistics.median(lib_times) * 1e3
    raw_ms = statistics.median(raw_times) * 1e3
    return {
        "files": files,
        "file_bytes": size,
        "library_ms": library_ms,
        "raw_ms": raw_ms,
        "library_vs_raw": library_ms / raw_ms,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--commit-reps", type=int, default=20, help="commit cycles of each kind (0: none)")
    parser.add_argument("--commit-files", type=int, default=200, help="files written before a commit")
    parser.add_argument("--commit-file-size", type=int, default=4096, help="bytes of each")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (real mounts)", file=sys.stderr)
        return 1
    if min(args.counts) < 1 or max(args.counts) > 500:
        print("counts go from 1 to 500 (the kernel overlay's limit)", file=sys.stderr)
        return 2
    os.environ["ROOTFS_CACHE"] = ""
    work = tempfile.mkdtemp(prefix="rootfs-bench-layers-")
    rows: list[dict[str, float | str | int]] = []
    committed: dict[str, float] = {}
    failed = None
    try:
        prototype = make_tiny_prototype(os.path.join(work, "prototype"))
        holder = os.path.join(work, "layers")
        os.mkdir(holder)
        layers = make_layers(holder, prototype, max(args.counts))
        base = os.path.join(work, "base")
        os.mkdir(base, 0o700)
        for count in args.counts:
            # the bottom and the top count - 1 of the deepest stack
            stack = [prototype, *layers[len(layers) - count + 1 :]] if count > 1 else [prototype]
            rows.append({"layers": count, **measure(base, stack, args.reps)})
        if args.commit_reps > 0:
            raw_dir = os.path.join(work, "raw")
            os.mkdir(raw_dir)
            committed = measure_commit(
                base, prototype, raw_dir, args.commit_reps, args.commit_files, args.commit_file_size
            )
    except Exception as exc:  # report, then clean up all the same
        failed = exc
    finally:
        left = hygiene.unmount_all_below(work)
        clean = hygiene.delete_tree(work)
    if not clean:
        print(f"left {work} (mounts below it: {left})", file=sys.stderr)
        return 3
    if failed is not None:
        print(f"failed: {failed!r}", file=sys.stderr)
        return 1
    one = rows[0]
    for row in rows:
        row["library_vs_raw"] = float(row["library_ms"]) / float(row["raw_ms"])
        row["library_vs_first"] = float(row["library_ms"]) / float(one["library_ms"])
        row["raw_vs_first"] = float(row["raw_ms"]) / float(one["raw_ms"])
    if args.json:
        print(json.dumps({"stacks": rows, "commit": committed or None}, indent=1))
        return 0
    print(f"layers  library ms  raw ms  raw via   lib/raw  lib/lib{one['layers']}  raw/raw{one['layers']}")
    for row in rows:
        print(
            f"{row['layers']:>6}  {row['library_ms']:>10.3f}  {row['raw_ms']:>6.3f}  {row['raw_api']:<8}  "
            f"{row['library_vs_raw']:>7.2f}  {row['library_vs_first']:>6.2f}  {row['raw_vs_first']:>6.2f}"
        )
    if committed:
        print(
            f"\ncommit ({committed['files']:.0f} files of {committed['file_bytes']:.0f} bytes): "
            f"library {committed['library_ms']:.3f} ms, raw {committed['raw_ms']:.3f} ms, "
            f"lib/raw {committed['library_vs_raw']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
