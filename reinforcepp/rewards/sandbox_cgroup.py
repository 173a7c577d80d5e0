"""One cgroup per sandbox run: bounds the memory and process count of everything the program starts.

An rlimit is per process (6 children x 900 MiB each stay under a 1 GiB RLIMIT_AS) and RLIMIT_NPROC is
per uid across the host; a cgroup bounds the sum. cgroup v2 is used when the caller's cgroup can give
its children both the memory and pids controllers, else v1's memory and pids hierarchies. The cgroup
is made under the caller's own one (so the host's limits still apply above it), joined by the
launcher before it unshares anything, and removed after the run once every process in it is dead.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass

__all__ = ["SandboxCgroup", "create"]

_CONTROLLERS = ("memory", "pids")
# Swap limits exist only where the kernel accounts swap; without swap there is nothing to limit.
_OPTIONAL = {"memory.memsw.limit_in_bytes", "memory.swap.max"}


@dataclass(frozen=True)
class SandboxCgroup:
    """The directories of one run's cgroup: one (v2) or one per controller hierarchy (v1)."""

    version: int
    dirs: tuple[str, ...]

    @property
    def procs_files(self) -> list[str]:
        """Where the launcher writes its pid to join (all its descendants follow)."""
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    def peak_memory_bytes(self) -> int | None:
        """The highest total memory use of the run (page cache and tmpfs included), when the kernel says."""
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        for d in self.dirs:
            path = os.path.join(d, name)
            if os.path.exists(path):
                return int(_read(path))
        return None

    def kill_and_remove(self, timeout: float = 10.0) -> None:
        """SIGKILL whatever is left in the cgroup, wait for it to empty, and remove it."""
        deadline = time.monotonic() + timeout
        while True:
            pids = {int(p) for f in self.procs_files if os.path.exists(f) for p in _read(f).split()}
            if not pids:
                break
            if time.monotonic() > deadline:
                raise OSError(f"sandbox cgroup {self.dirs[0]} still has processes {sorted(pids)} after {timeout}s")
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        for d in self.dirs:
            _rmdir_when_released(d, deadline)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _rmdir_when_released(path: str, deadline: float) -> None:
    """rmdir, retrying while the kernel still counts just-exited tasks (EBUSY)."""
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount point, root inside the hierarchy, fs type, super options) of every cgroup mount."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, (fstype, _source, options) = left.split(), right.split()[:3]
            if fstype in ("cgroup", "cgroup2"):
                found.append((fields[4], fields[3], fstype, set(options.split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """Our cgroup path per v1 controller, and under "" the v2 one, from /proc/self/cgroup."""
    paths = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                paths[name] = path
    return paths


def _join(mount_point: str, mount_root: str, path: str) -> str:
    if mount_root != "/" and path.startswith(mount_root):
        path = path[len(mount_root):]
    return os.path.normpath(os.path.join(mount_point, path.lstrip("/")))


def _v2_parent(mounts, own) -> str | None:
    """Our v2 cgroup if it can hand memory and pids to a child (already delegated, or enabled now)."""
    if "" not in own:
        return None
    for point, root, fstype, _ in mounts:
        if fstype != "cgroup2":
            continue
        parent = _join(point, root, own[""])
        try:
            if not set(_CONTROLLERS) <= set(_read(os.path.join(parent, "cgroup.controllers")).split()):
                continue
            enabled = set(_read(os.path.join(parent, "cgroup.subtree_control")).split())
            if not set(_CONTROLLERS) <= enabled:
                _write(os.path.join(parent, "cgroup.subtree_control"), " ".join(f"+{c}" for c in _CONTROLLERS))
        except OSError:  # e.g. EBUSY: a cgroup with processes cannot delegate ("no internal processes")
            continue
        return parent
    return None


def _v1_parents(mounts, own) -> list[str] | None:
    parents = []
    for controller in _CONTROLLERS:
        match = [(p, r) for p, r, fstype, opts in mounts if fstype == "cgroup" and controller in opts]
        if not match or controller not in own:
            return None
        parents.append(_join(match[0][0], match[0][1], own[controller]))
    return parents


def create(memory_bytes: int, max_processes: int) -> SandboxCgroup:
    """A fresh cgroup limited to ``memory_bytes`` in total (no swap) and ``max_processes`` tasks.

    Raises ``OSError`` saying why when neither v2 nor v1 memory+pids can be used here.
    """
    mounts, own = _mounts(), _own_paths()
    name = f"rpp-sandbox-{uuid.uuid4().hex[:12]}"
    v2 = _v2_parent(mounts, own)
    if v2 is not None:
        group = SandboxCgroup(2, (os.path.join(v2, name),))
        limits = [("memory.max", memory_bytes), ("memory.swap.max", 0), ("pids.max", max_processes)]
    else:
        parents = _v1_parents(mounts, own)
        if parents is None:
            raise OSError("no cgroup hierarchy with the memory and pids controllers (v2 delegated, or v1 mounted)")
        group = SandboxCgroup(1, tuple(os.path.join(p, name) for p in parents))
        # memsw (memory + swap) is set after memory: the kernel wants memsw >= memory at all times.
        limits = [("memory.limit_in_bytes", memory_bytes), ("memory.memsw.limit_in_bytes", memory_bytes),
                  ("pids.max", max_processes)]
    try:
        for d in group.dirs:
            os.mkdir(d, 0o700)
        for file, value in limits:
            path = next((os.path.join(d, file) for d in group.dirs if os.path.exists(os.path.join(d, file))), None)
            if path is None and file not in _OPTIONAL:
                raise OSError(f"the sandbox cgroup {group.dirs[0]} has no {file}")
            if path is not None:
                _write(path, str(value))
    except OSError:
        group.kill_and_remove(timeout=1.0)
        raise
    return group
