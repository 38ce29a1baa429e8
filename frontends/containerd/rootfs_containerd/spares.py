"""Writable roots made ahead, so that a Prepare over a layer stack used
before finds its root already mounted.

containerd's own overlayfs snapshotter answers a Prepare with a directory
and mount options: the client mounts. rootfs hands out a bind of a root it
has mounted itself (the backend's guarantees hold for it), so its Prepare
does the mount: about a millisecond of the core that a client of the native
snapshotter pays later, or never (a snapshot without parent is a bind of a
plain directory there). Most Prepares repeat a stack (each container of an
image is a Prepare over that image's layers), so after a stack's second
Prepare one root over it is kept ready, and a Prepare takes it while a new
one is made behind it.

What this costs and how it is bounded: one idle mounted root per kept
stack, at most ``stacks`` stacks (the most recently used), each forgotten
(its root removed) once no Prepare used it for ``idle`` seconds, or at once
when one of its layers is to be deleted. Unpacking an image prepares each
stack once, so it keeps none. A spare is an instance of the core like any
other, in no row of the metadata: after a crash, the reconciliation at
start-up deletes it as unexplained.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager

log = logging.getLogger("rootfs_containerd")

Stack = tuple[str, ...]  # the layers a root stacks, bottom first, as paths
SEEN = 256  # stacks remembered as used once, to tell a second use
# Seconds a Prepare waits for the spare being made over its stack: about
# ten times a generate here; a helper starved longer than that (its CPU
# priority is lower) is not waited for.
MAKING_WAIT = 0.05


class Spares:
    """Ready roots over the recently used stacks, kept by a thread of their own.

    ``make(stack)`` generates a writable root over the stack and returns its
    path; ``destroy(root)`` removes one; both run inside ``guard()`` (the
    snapshotter's shared gate, so that its reconciliation never sees a root
    made but not yet listed here).
    """

    def __init__(
        self,
        make: Callable[[Stack], str],
        destroy: Callable[[str], None],
        guard: Callable[[], AbstractContextManager[None]],
        *,
        stacks: int,
        idle: float,
    ) -> None:
        self._make = make
        self._destroy = destroy
        self._guard = guard
        self._stacks = stacks
        self._idle = idle
        self._cond = threading.Condition()
        self._seen: OrderedDict[Stack, None] = OrderedDict()  # used once, most recent last
        self._kept: OrderedDict[Stack, float] = OrderedDict()  # stack -> its last use (monotonic)
        self._ready: dict[Stack, str] = {}
        self._making: set[Stack] = set()
        self._closing = False
        self._thread: threading.Thread | None = None
        if stacks > 0:
            self._thread = threading.Thread(target=self._keep, name="spares", daemon=True)
            self._thread.start()

    # -------------------------------------------------------------- callers
    def take(self, stack: Stack) -> str | None:
        """The root of a ready spare over ``stack`` (now the caller's), or
        None; either way the use is counted. One being made is waited for
        (up to ``MAKING_WAIT`` seconds): it is done sooner than another
        made from the start, which would compete with it for the CPU. The
        caller calls ``refill`` after."""
        if self._thread is None:
            return None
        with self._cond:
            now = time.monotonic()
            if stack in self._kept or stack in self._seen:
                self._seen.pop(stack, None)
                self._kept[stack] = now
                self._kept.move_to_end(stack)
            else:
                self._seen[stack] = None
                while len(self._seen) > SEEN:
                    self._seen.popitem(last=False)
            deadline = now + MAKING_WAIT
            while stack in self._making and not self._closing and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            return self._ready.pop(stack, None)

    def refill(self) -> None:
        """Make the spares that ``take`` used (and any a stack now wants)."""
        if self._thread is not None:
            with self._cond:
                self._cond.notify_all()

    def roots(self) -> set[str]:
        """The ready spares (for the reconciliation: instances no row names
        that are not strays)."""
        with self._cond:
            return set(self._ready.values())

    def forget(self, layer: str) -> None:
        """Before ``layer`` is deleted: no spare over it any more (one being
        made is waited for and removed)."""
        with self._cond:
            stacks = {s for s in (*self._kept, *self._seen, *self._making) if layer in s}
            for stack in stacks:
                self._kept.pop(stack, None)
                self._seen.pop(stack, None)
            while self._making & stacks:
                self._cond.wait()
        self._remove({stack: None for stack in stacks})

    def close(self) -> None:
        """Stop making spares and remove those ready."""
        if self._thread is None:
            return
        with self._cond:
            self._closing = True
            self._kept.clear()
            self._cond.notify_all()
        self._thread.join()
        self._remove(None)

    # --------------------------------------------------------------- worker
    def _keep(self) -> None:
        """Make a spare for each kept stack without one; forget the stacks
        beyond the limit or idle too long; until closed."""
        while True:
            with self._cond:
                while True:
                    if self._closing:
                        return
                    stale = self._stale(time.monotonic())
                    wanted = next((s for s in self._kept if s not in self._ready), None)
                    if stale or wanted is not None:
                        break
                    self._cond.wait(self._next_expiry())
                if wanted is not None:
                    self._making.add(wanted)
            if stale:
                self._remove(stale)
            if wanted is not None:
                self._make_one(wanted)

    def _stale(self, now: float) -> dict[Stack, None]:
        """Stacks to forget now (called with the lock held, which it keeps):
        idle too long, or beyond the limit (the least recently used)."""
        stale = {stack: None for stack, used in self._kept.items() if now - used > self._idle}
        surplus = len(self._kept) - len(stale) - self._stacks
        for stack in self._kept:
            if surplus <= 0:
                break
            if stack not in stale:
                stale[stack] = None
                surplus -= 1
        for stack in stale:
            del self._kept[stack]
        return stale

    def _next_expiry(self) -> float | None:
        if not self._kept:
            return None
        return max(0.0, min(self._kept.values()) + self._idle - time.monotonic()) + 0.01

    def _make_one(self, stack: Stack) -> None:
        root = None
        try:
            with self._guard():
                root = self._make(stack)
                with self._cond:
                    if stack in self._kept and stack not in self._ready and not self._closing:
                        self._ready[stack] = root
                        root = None  # kept
            if root is not None:
                log.debug("a spare root over %s is no longer wanted", stack[-1])
                self._remove_roots([root])
        except Exception:
            log.exception("making a spare root over %s failed", stack[-1])
            with self._cond:
                self._kept.pop(stack, None)  # made again after its next two uses
        finally:
            with self._cond:
                self._making.discard(stack)
                self._cond.notify_all()

    def _remove(self, stacks: dict[Stack, None] | None) -> None:
        """Remove the ready spares over ``stacks`` (None: all)."""
        with self._cond:
            chosen = list(self._ready) if stacks is None else [s for s in stacks if s in self._ready]
            roots = [self._ready.pop(stack) for stack in chosen]
        self._remove_roots(roots)

    def _remove_roots(self, roots: list[str]) -> None:
        for root in roots:
            try:
                with self._guard():
                    self._destroy(root)
            except Exception as exc:  # an instance no row names: the next Cleanup deletes it
                log.warning("could not remove the spare root %s: %s", root, exc)
