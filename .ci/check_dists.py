"""Build every distribution of this repository and check what would be uploaded.

``tox -e packaging`` runs it: for rootfs-core and each plugin, ``python -m
build`` (an sdist, then a wheel built from that sdist, so a file missing from
the sdist fails here too), failing on any warning the build prints (a
deprecated setting, a file left out); then ``twine check --strict`` on every
file, and a look inside the wheels: the SPDX licence, the ``testing`` extra,
and the files rootfs-core ships besides its modules.

    python .ci/check_dists.py OUTDIR
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISTRIBUTIONS = [
    ROOT,
    *sorted(os.path.dirname(p) for p in glob.glob(f"{ROOT}/plugins/*/pyproject.toml")),
    *sorted(os.path.dirname(p) for p in glob.glob(f"{ROOT}/frontends/*/pyproject.toml")),
]
CORE_FILES = ("rootfs_core/py.typed", "rootfs_core/data/rootfs-gc.service")


def fail(message: str) -> None:
    print(f"check_dists: {message}", file=sys.stderr)
    sys.exit(1)


def build(source: str, outdir: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", outdir, source],
        capture_output=True,
        text=True,
        check=False,
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        fail(f"building {source} failed:\n{output}")
    warnings = [line for line in output.splitlines() if "warning" in line.lower()]
    if warnings:
        fail(f"building {source} warned:\n" + "\n".join(warnings))
    print(f"built {os.path.relpath(source, ROOT) if source != ROOT else '.'} without a warning")


def metadata(wheel: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return zf.read(name).decode()


def main(outdir: str) -> None:
    os.makedirs(outdir, exist_ok=True)
    for stale in glob.glob(os.path.join(outdir, "*")):
        os.unlink(stale)
    for source in DISTRIBUTIONS:
        build(source, outdir)
    wheels = sorted(glob.glob(os.path.join(outdir, "*.whl")))
    sdists = sorted(glob.glob(os.path.join(outdir, "*.tar.gz")))
    if len(wheels) != len(DISTRIBUTIONS) or len(sdists) != len(DISTRIBUTIONS):
        found = ", ".join(os.path.basename(p) for p in wheels + sdists)
        fail(f"expected a wheel and an sdist of each of {len(DISTRIBUTIONS)} distributions, got {found}")
    subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *wheels, *sdists], check=True)
    for wheel in wheels:
        meta = metadata(wheel)
        if "License-Expression: Apache-2.0" not in meta.splitlines():
            fail(f"{os.path.basename(wheel)} does not declare License-Expression: Apache-2.0")
    (core,) = [w for w in wheels if os.path.basename(w).startswith("rootfs_core-")]
    with zipfile.ZipFile(core) as zf:
        missing = [f for f in CORE_FILES if f not in zf.namelist()]
    if missing:
        fail(f"{os.path.basename(core)} lacks {', '.join(missing)}")
    if "Provides-Extra: testing" not in metadata(core).splitlines():
        fail(f"{os.path.basename(core)} has no 'testing' extra")
    print(f"checked {len(wheels)} wheels and {len(sdists)} sdists")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        fail("usage: check_dists.py OUTDIR")
    main(sys.argv[1])
