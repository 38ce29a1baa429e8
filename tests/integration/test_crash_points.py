"""A process killed (SIGKILL) at every single kernel call of a generate or a
remove, on each real backend, is cleaned up by ``gc``: the deterministic
complement of the random stress in test_crash_stress.py.

The operation runs in a forked child whose syscalls kill it just before, or
just after, its N-th changing call, for every N. The two points differ: just
before, the step is journaled but was never taken (undo must skip it); just
after, it was taken but the next one is not journaled yet. After each kill:
the marker proves the kill landed inside the operation, ``gc`` on a RootFS
opened earlier (so its own sweep, not the one on opening, does the work)
names exactly that instance, and then nothing of it is left while the
instance made beforehand still works and the prototype is unchanged.

The same at every call that creates, links or deletes a file of the store
(markers, records and their temporary files), in the middle of a journal
line, and at the moment a record appears: ``gc`` leaves nothing at all of
an unfinished instance, not even a temporary file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest
from integration_support import (
    KillingSyscalls,
    act_once_visible,
    assert_consistent,
    assert_works,
    base_state,
    list_json,
    run_cli,
    text,
)

from rootfs_core import RootFS
from rootfs_core.store import Store
from rootfs_core.syscalls import UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.checks import instance_mounts, mounts_below, tree_checksum
from rootfs_core.testing.faults import FaultySyscalls


def _die_in_child(action: Callable[[], None]) -> int:
    """Run ``action`` in a forked child; return its wait status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child, killed or leaving at once
        code = 0
        try:
            action()
        except BaseException:
            code = 3
        os._exit(code)
    return os.waitpid(pid, 0)[1]


def _count_calls(rfs: RootFS, killer: KillingSyscalls, prototype: str) -> tuple[int, int]:
    """How many changing calls a generate, and a remove, make (unarmed)."""
    killer.calls.clear()
    root = rfs.generate(prototype)
    generate_calls = len(killer.calls)
    killer.calls.clear()
    rfs.remove(root)
    return generate_calls, len(killer.calls)


@pytest.mark.parametrize("operation", ["generate", "remove"])
def test_sigkill_at_every_call_is_swept_by_gc(
    base_dir: str, backend: str, prototype: str, operation: str
) -> None:
    """Kill at each call, before and after it: ``gc`` finds exactly the killed
    instance, and afterwards no mount, directory, record or marker of it
    remains; the finished instance still works; the prototype is unchanged."""
    rfs = RootFS(base_dir, backend=backend)
    keeper = rfs.generate(prototype)
    per_instance = {backend: len(mounts_below(keeper))}
    checksum = tree_checksum(prototype)
    killer = KillingSyscalls()
    victim = RootFS(base_dir, backend=backend, syscalls=killer)
    victim.selected_backend()  # probe now, unarmed: the count is the operation's alone
    calls = dict(zip(("generate", "remove"), _count_calls(victim, killer, prototype), strict=True))[operation]
    assert calls >= 5
    for when in ("before", "after"):
        for at in range(1, calls + 1):
            where = f"{backend} {operation} killed {when} call {at} of {calls}"
            target = rfs.generate(prototype) if operation == "remove" else ""

            def act(at: int = at, when: str = when, target: str = target) -> None:
                killer.calls.clear()
                killer.armed, killer.kill_at, killer.when = True, at, when
                if operation == "generate":
                    victim.generate(prototype)
                else:
                    victim.remove(target)

            status = _die_in_child(act)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{where}: {status}"
            (killed,) = base_state(base_dir).markers  # the kill landed inside the operation
            report = rfs.gc()
            assert report.instances == [killed], f"{where}: {report}"
            assert report.unmounted == [] and report.orphans == [], f"{where}: {report}"
            listed = [dataclasses.asdict(i) for i in rfs.instances()]
            assert assert_consistent(base_dir, per_instance, where, listed=listed) == [
                os.path.basename(os.path.dirname(keeper))
            ], where
            assert_works(keeper, f"{when}{at}")
            assert tree_checksum(prototype) == checksum, where
    rfs.remove(keeper)


def _die_at_store_file_call(monkeypatch: pytest.MonkeyPatch, state_dir: str, at: int, when: str) -> None:
    """In a forked child only: SIGKILL this process just ``before``, or just
    ``after``, its ``at``-th call that creates, links, renames or deletes a
    file of the store (``os.open`` with ``O_CREAT``, ``os.link``,
    ``os.rename``, ``os.replace``, ``os.unlink`` on a path in ``state_dir``):
    markers, records and their temporary files, whatever way they are written."""
    count = 0

    def wrap(name: str) -> None:
        real = getattr(os, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            nonlocal count
            # A link or rename is the store's by either path (a record is
            # linked in as a marker through /proc/self/fd).
            paths = args[:1] if name in ("open", "unlink") else args[:2]
            ours = any(isinstance(path, str) and path.startswith(state_dir + "/") for path in paths)
            if name == "open":
                ours = ours and bool(args[1] & os.O_CREAT)
            if ours:
                count += 1
                if count == at and when == "before":
                    os.kill(os.getpid(), signal.SIGKILL)
            result = real(*args, **kwargs)
            if ours and count == at and when == "after":
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        monkeypatch.setattr(os, name, call)

    for name in ("open", "link", "rename", "replace", "unlink"):
        wrap(name)


@pytest.mark.parametrize("operation", ["generate", "remove"])
def test_sigkill_at_every_file_of_the_store_is_swept_by_gc(
    base_dir: str, backend: str, prototype: str, operation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kill just before and just after each call that creates, links or
    deletes a marker, a record or one of their temporary files: ``gc``
    names exactly the instances left marked, and then nothing at all is
    left of an unfinished instance (no record, marker, temporary file,
    directory or mount); an instance is either whole and ready or gone; the
    instance made beforehand still works."""
    rfs = RootFS(base_dir, backend=backend)
    keeper = rfs.generate(prototype)
    keeper_id = os.path.basename(os.path.dirname(keeper))
    per_instance = {backend: len(mounts_below(keeper))}
    state_dir = Store(base_dir).state_dir
    kills = temporaries = 0
    for when in ("before", "after"):
        for at in range(1, 100):
            where = f"{backend} {operation} killed {when} store call {at}"
            target = rfs.generate(prototype) if operation == "remove" else ""

            def act(at: int = at, when: str = when, target: str = target) -> None:
                _die_at_store_file_call(monkeypatch, state_dir, at, when)
                if operation == "generate":
                    rfs.generate(prototype)
                else:
                    rfs.remove(target)

            status = _die_in_child(act)
            if os.WIFEXITED(status):  # fewer calls than that: all were covered
                assert os.WEXITSTATUS(status) == 0 and at > 3, f"{where}: {status}"
                for instance in rfs.instances():
                    if instance.id != keeper_id:
                        rfs.remove(instance.root)
                break
            assert os.WTERMSIG(status) == signal.SIGKILL, f"{where}: {status}"
            kills += 1
            before = base_state(base_dir)
            temporaries += bool(before.strays)
            report = rfs.gc()
            assert report.instances == before.markers, f"{where}: {before} {report}"
            assert report.unmounted == [] and report.orphans == [], f"{where}: {report}"
            listed = [dataclasses.asdict(i) for i in rfs.instances()]
            ready = assert_consistent(base_dir, per_instance, where, listed=listed)
            assert keeper_id in ready and len(ready) <= 2, f"{where}: {ready}"
            for instance_id in ready:
                assert_works(os.path.join(base_dir, instance_id, "root"), f"{when}{at}")
                if instance_id != keeper_id:  # the generate had finished, or the remove not begun
                    assert not before.markers, f"{where}: {before}"
                    rfs.remove(instance_id)
    print(f"{backend} {operation}: {kills} kills, {temporaries} left a temporary file")
    # A remove creates no file (the record it locked becomes its marker),
    # so only a generate can leave a temporary one.
    assert kills >= 6 and (temporaries > 0) == (operation == "generate"), (kills, temporaries)
    rfs.remove(keeper)


def test_a_journal_append_killed_half_way_is_swept(
    base_dir: str, backend: str, prototype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generate killed in the middle of appending a step to its journal
    (half the line on disk) at each of its appends: the torn line names a
    step never taken, and gc sweeps the instance without a trace."""
    rfs = RootFS(base_dir, backend=backend)
    rfs.selected_backend()
    real_write = os.write
    for append in range(1, 100):
        appended = 0

        def torn(fd: int, data: bytes, append: int = append) -> int:
            nonlocal appended
            if data.startswith(b'["') and data.endswith(b"]\n"):  # a journal step
                appended += 1
                if appended == append:
                    real_write(fd, data[: len(data) // 2])
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_write(fd, data)

        def act(torn: Callable[[int, bytes], int] = torn) -> None:
            monkeypatch.setattr(os, "write", torn)  # in the child only
            rfs.generate(prototype)

        status = _die_in_child(act)
        if os.WIFEXITED(status):  # fewer appends than that: all were covered
            assert os.WEXITSTATUS(status) == 0 and append > 3
            break
        assert os.WTERMSIG(status) == signal.SIGKILL
        (killed,) = base_state(base_dir).markers
        assert rfs.gc().instances == [killed], f"append {append}"
        listed = [dataclasses.asdict(i) for i in rfs.instances()]
        assert_consistent(base_dir, {}, f"append {append}", listed=listed)
    for instance in rfs.instances():
        rfs.remove(instance.root)


def test_a_generate_killed_as_its_record_appears_is_swept(
    base_dir: str, backend: str, prototype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generate killed at the very moment its record file appears (the
    first thing it creates after its marker), however the store writes it:
    gc sweeps the instance, and nothing is left."""
    rfs = RootFS(base_dir, backend=backend)
    rfs.selected_backend()
    records = Store(base_dir).records_dir

    def act() -> None:
        act_once_visible(
            monkeypatch,
            lambda path: os.path.dirname(path) == records and path.endswith(".json"),
            lambda: os.kill(os.getpid(), signal.SIGKILL),
        )
        rfs.generate(prototype)

    status = _die_in_child(act)
    if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
        pytest.fail(f"the generate never made a record appear (status {status}): update this test")
    (killed,) = base_state(base_dir).markers
    assert rfs.gc().instances == [killed]
    assert_consistent(base_dir, {}, listed=[])


@pytest.mark.parametrize("content", [b"", b'{"id": "'], ids=["empty", "torn header"])
def test_a_record_left_empty_by_a_power_loss_is_swept(base_dir: str, content: bytes) -> None:
    """What a power loss can leave of a generate that had just begun: its
    marker, and its record file with no complete header (written, not yet on
    disk). gc sweeps it, and nothing is left."""
    store = Store(base_dir)
    store.ensure()  # state is made lazily, by the first generate
    instance_id = "0123456789ab"
    open(os.path.join(store.incomplete_dir, instance_id), "x").close()
    with open(os.path.join(store.records_dir, instance_id + ".json"), "xb") as fh:
        fh.write(content)
    # sweep=False: opening would sweep it already, and gc would find nothing to name
    assert RootFS(base_dir, sweep=False).gc().instances == [instance_id]
    assert_consistent(base_dir, {}, listed=[])


@pytest.mark.parametrize("fail_at", [1, 2], ids=["first call", "second call"])
def test_a_record_rewrite_killed_half_way_leaves_nothing(
    base_dir: str, backend: str, prototype: str, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    """A remove that fails rewrites the record (what is left to undo, and
    whether a removal took effect); killed inside that rewrite, just before
    the new record replaces the old, it is swept by gc without a trace, not
    even a temporary file. At its first call nothing was touched yet; at
    its second the removal is half-way."""
    faulty = FaultySyscalls()
    rfs = RootFS(base_dir, backend=backend, syscalls=faulty)
    rfs.selected_backend()
    root = rfs.generate(prototype)
    records = Store(base_dir).records_dir

    def act() -> None:
        real_replace = os.replace

        def replace(src: str, dst: str) -> None:
            if os.path.dirname(os.fsdecode(dst)) == records:
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)  # in the child only
        faulty.calls.clear()
        faulty.fail_on = {fail_at}  # the remove fails, and rewrites what is left
        rfs.remove(root)

    status = _die_in_child(act)
    if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
        pytest.fail(f"the failed remove never replaced its record (status {status}): update this test")
    before = base_state(base_dir)
    (killed,) = before.markers
    assert before.strays, "the killed rewrite left no temporary file: update this test"
    assert rfs.gc().instances == [killed]
    assert_consistent(base_dir, {}, listed=[])  # no stray temporary file either


def test_gc_dry_run_changes_nothing_and_names_the_killed_instance(
    base_dir: str, backend: str, prototype: str
) -> None:
    """``rootfs gc --dry-run`` after a generate killed once its root was
    mounted names that instance and leaves its marker and mounts in place;
    the real ``rootfs gc`` then takes it apart."""
    killer = KillingSyscalls()
    rfs = RootFS(base_dir, backend=backend, syscalls=killer)
    rfs.selected_backend()
    killer.calls.clear()
    rfs.remove(rfs.generate(prototype))
    mounted_at = max(i for i, call in enumerate(killer.calls, 1) if call.name == "mount")

    def act() -> None:
        killer.calls.clear()
        killer.armed, killer.kill_at, killer.when = True, mounted_at, "after"
        rfs.generate(prototype)

    assert os.WTERMSIG(_die_in_child(act)) == signal.SIGKILL
    before = base_state(base_dir)
    (killed,) = before.markers
    assert before.mounts
    try:
        dry = run_cli(base_dir, "gc", "--dry-run", "--json")
        assert dry.returncode == 0, text(dry.stderr)
        assert json.loads(dry.stdout)["instances"] == [killed]
        assert base_state(base_dir) == before, "the dry run changed something"
    finally:
        gc = run_cli(base_dir, "gc", "--json")
        assert gc.returncode == 0, text(gc.stderr)
    assert_consistent(base_dir, {}, listed=[])


@pytest.mark.parametrize(
    ("backend", "options"),
    [("overlayfs", {}), ("overlayfs", {"size": "8M"}), ("quilt", {})],
    ids=["overlayfs", "overlayfs-size", "quilt"],
    indirect=["backend"],
)
def test_after_a_reboot_every_instance_can_still_be_removed(
    base_dir: str, backend: str, prototype: str, options: dict[str, str]
) -> None:
    """What a reboot (or power loss) leaves: records and directories, but no
    mount at all (and an empty tmpfs layer). gc leaves these instances
    alone (they were finished; see docs/reliability.md), and ``rootfs
    remove`` still takes each one apart completely."""
    rfs = RootFS(base_dir, backend=backend)
    roots = [rfs.generate(prototype, **options) for _ in range(2)]
    for point in reversed(instance_mounts(base_dir)):  # the reboot
        LinuxSyscalls().umount(point, UMOUNT_NOFOLLOW)
    gc = run_cli(base_dir, "gc", "--json")
    assert gc.returncode == 0, text(gc.stderr)
    assert sorted(r["root"] for r in list_json(base_dir)) == sorted(roots)
    for root in roots:
        proc = run_cli(base_dir, "remove", root)
        assert proc.returncode == 0, text(proc.stderr)
    assert_consistent(base_dir, {}, listed=[])
