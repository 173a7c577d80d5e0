"""Run untrusted (model-generated) Python in an isolated child process.

Isolation, all set up by a small root launcher (``sandbox_launcher.py``) before it execs the program:

* a cgroup per run (``sandbox_cgroup.py``): total memory (page cache and tmpfs included, no swap) and
  process count of everything the program starts;
* new network namespace: no interfaces but a DOWN loopback, so every connect fails; new IPC, UTS and
  cgroup namespaces;
* new mount namespace and a minimal root (``pivot_root``): read-only bind mounts of the interpreter, its
  prefix's ``lib`` dir and the system library dirs, ``/dev/{null,zero,random,urandom}``, a fresh
  ``/proc``, and a size-capped tmpfs at ``/tmp`` whose ``/tmp/work`` (holding ``main.py``; ``/dev/shm``
  points there) is the only writable place. No host ``/home``, ``/root``, ``/srv``, ``/run``, ``/tmp``,
  project checkout or UNIX socket is visible; the program runs under the base interpreter (``-I``),
  never our venv;
* new PID namespace: the program is PID 1 there, so when it dies the kernel kills every process it
  spawned (no escape from the wall-clock kill by ``setsid``), and ``/proc`` shows only the sandbox;
* ``resource.setrlimit``: CPU seconds, address space, file size, open files, no core dumps;
* ``no_new_privs``, then setgid/setuid to an unprivileged user (``nobody``), then a seccomp filter
  (``sandbox_seccomp.py``) that denies new namespaces, mounts, ptrace, bpf, keyrings, io_uring...;
* a wall-clock timeout that SIGKILLs the launcher (the program has a parent-death signal) and then
  everything left in the cgroup; the cgroup and the host-side temp dir are removed afterwards.

The program's stdout and stderr go to host files bounded by RLIMIT_FSIZE; that and the program text
copied in are the only exchange with the host.

``ensure_sandbox()`` probes all of that once and raises ``SandboxUnavailable`` if any part is
missing: we never fall back to running code unsandboxed.

Python-level guards are not used: they are bypassable and the kernel boundaries above are not.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import sandbox_cgroup, sandbox_launcher
from .sandbox_seccomp import filter_bytes

__all__ = ["SandboxResult", "SandboxUnavailable", "ensure_sandbox", "run_in_sandbox", "run_many"]

# Exit code the launcher uses when it cannot build the sandbox (the message starts with _SETUP_TAG).
_SETUP_FAILED = sandbox_launcher.SETUP_FAILED
_SETUP_TAG = sandbox_launcher.SETUP_TAG
_LAUNCHER = Path(sandbox_launcher.__file__).read_text(encoding="utf-8")

_TAIL = 4096  # bytes of stdout / stderr kept in the result
_TMPFS_INODES = 16384  # files the program may create in its tmpfs
# What the new root holds besides the interpreter's files.
_DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
# /dev/shm (POSIX semaphores, so multiprocessing works) points into the program's own tmpfs dir.
_DEV_LINKS = {"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0", "/dev/stdout": "/proc/self/fd/1",
              "/dev/stderr": "/proc/self/fd/2", "/dev/shm": "/tmp/work"}
_LIB_DIRS = ("/lib", "/lib64", "/lib32", "/libx32", "/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32")


class SandboxUnavailable(RuntimeError):
    """The isolation cannot be set up here; code is refused rather than run unsandboxed."""


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run. ``status`` is passed | failed | timeout | error."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    duration: float
    memory_peak_mb: float | None = None  # the whole run's highest memory use (its cgroup's), when known

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _world_executable(path: str) -> bool:
    """True when an unprivileged user can exec ``path`` (every parent dir searchable)."""
    path = os.path.realpath(path)
    if not os.path.isfile(path) or not os.stat(path).st_mode & stat.S_IXOTH:
        return False
    parent = os.path.dirname(path)
    while True:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
        if parent == "/":
            return True
        parent = os.path.dirname(parent)


def _default_python() -> str:
    """The base interpreter (never a venv's) when ``nobody`` may run it, else the system python3.

    Only the standard library is needed, and a venv may sit inside the project checkout, which the
    sandbox must not show. Our base interpreter often sits in /root (mode 0700).
    """
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for candidate in (os.path.join(sys.base_prefix, "bin", version), "/usr/bin/python3", "/usr/local/bin/python3"):
        if _world_executable(candidate):
            return os.path.realpath(candidate)
    raise SandboxUnavailable(
        f"no Python interpreter that an unprivileged user can execute ({sys.base_prefix} is not); "
        "pass python=... or install /usr/bin/python3")


def _tail(path: str) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - _TAIL))
        return f.read().decode("utf-8", "replace")


@functools.lru_cache(maxsize=None)
def _layout(python: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(read-only binds, symlinks) of the new root: the interpreter, its prefix's lib, the system lib dirs.

    A lib dir that is a symlink on the host (merged /usr: /lib -> usr/lib) is recreated as one.
    """
    prefix_lib = os.path.join(os.path.dirname(os.path.dirname(python)), "lib")
    binds, links = [], dict(_DEV_LINKS)
    for path in (*_LIB_DIRS, prefix_lib):
        if os.path.islink(path):
            links[path] = os.readlink(path)
        elif os.path.isdir(path):
            binds.append(path)
    binds.append(python)
    binds = [p for p in dict.fromkeys(binds) if not any(p.startswith(q + "/") for q in binds)]
    return tuple(binds), tuple(links.items())


def _root_entries(python: str) -> list[str]:
    """The names the program must see in its ``/``, and nothing else."""
    binds, links = _layout(python)
    paths = [*binds, *(link for link, _ in links), *_DEVICES, "/proc", "/tmp"]
    return sorted({p.split("/")[1] for p in paths})


def _config(python: str, uid: int, gid: int, base: str, cgroup: sandbox_cgroup.SandboxCgroup, *, cpu: int,
            memory_mb: int, max_file_mb: int, max_open_files: int, tmpfs_mb: int) -> dict:
    """The launcher's settings (see sandbox_launcher.py)."""
    binds, links = _layout(python)
    mem, fsize = memory_mb << 20, max_file_mb << 20
    return {
        "python": python, "uid": uid, "gid": gid, "program": os.path.join(base, "main.py"),
        "root": os.path.join(base, "root"), "binds": list(binds), "links": dict(links),
        "devices": [d for d in _DEVICES if os.path.exists(d)], "tmpfs_kb": tmpfs_mb << 10,
        "tmpfs_inodes": _TMPFS_INODES, "cgroup_procs": cgroup.procs_files, "seccomp": filter_bytes().hex(),
        "limits": {
            "RLIMIT_CPU": [cpu, cpu + 1], "RLIMIT_AS": [mem, mem], "RLIMIT_FSIZE": [fsize, fsize],
            "RLIMIT_NOFILE": [max_open_files] * 2, "RLIMIT_CORE": [0, 0],
        },
        "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp/work", "TMPDIR": "/tmp/work",
                "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"},
    }


def _wait_or_kill(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait up to ``timeout`` s; then SIGKILL the launcher's group either way. True when it timed out."""
    try:
        proc.wait(timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        try:  # the program has a parent-death SIGKILL; its PID namespace dies with it; the cgroup gets the rest
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return timed_out


def _run(code: str, *, timeout: float, memory_mb: int, cpu_seconds: float | None, max_processes: int,
         max_file_mb: int, max_open_files: int, tmpfs_mb: int, python: str, user: str) -> SandboxResult:
    """One sandboxed run, without the availability check (the probe itself uses this)."""
    entry = pwd.getpwnam(user)
    cpu = int(cpu_seconds if cpu_seconds is not None else timeout) + 1
    base = tempfile.mkdtemp(prefix="rpp-sandbox-")  # root 0700: the program text, the captured output
    cgroup = None
    try:
        with open(os.path.join(base, "main.py"), "w", encoding="utf-8") as f:
            f.write(code)
        os.mkdir(os.path.join(base, "root"), 0o700)  # the new root's mount point (in the launcher's namespace)
        try:
            cgroup = sandbox_cgroup.create(memory_mb << 20, max_processes + 1)  # + 1: the launcher
            cfg = _config(python, entry.pw_uid, entry.pw_gid, base, cgroup, cpu=cpu, memory_mb=memory_mb,
                          max_file_mb=max_file_mb, max_open_files=max_open_files, tmpfs_mb=tmpfs_mb)
        except OSError as exc:
            raise SandboxUnavailable(f"cannot set up the sandbox: {exc}") from exc
        out_path, err_path = os.path.join(base, "stdout"), os.path.join(base, "stderr")
        # Output goes to files, not pipes, so RLIMIT_FSIZE bounds it and no reader thread is needed.
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            start = time.monotonic()
            proc = subprocess.Popen(
                [python, "-I", "-B", "-c", _LAUNCHER, json.dumps(cfg)], cwd=base, env={},
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
            timed_out = _wait_or_kill(proc, timeout)
            duration = time.monotonic() - start
        peak = cgroup.peak_memory_bytes()
        stdout, stderr = _tail(out_path), _tail(err_path)
    finally:
        try:
            if cgroup is not None:
                cgroup.kill_and_remove()
        finally:
            shutil.rmtree(base, ignore_errors=True)
    rc = proc.returncode
    if timed_out or rc == 128 + signal.SIGXCPU:
        status = "timeout"
    elif rc == _SETUP_FAILED and _SETUP_TAG in stderr:
        status = "error"
    else:
        status = "passed" if rc == 0 else "failed"
    return SandboxResult(status, None if timed_out else rc, stdout, stderr, duration,
                         None if peak is None else peak / (1 << 20))


_PROBE = """
import ctypes, json, os, socket
try:
    open("/tmp/escape", "w").close(); tmp_writable = True
except OSError:
    tmp_writable = False
libc = ctypes.CDLL(None, use_errno=True)
unshare_errno = ctypes.get_errno() if libc.unshare(0x10000000) else 0  # CLONE_NEWUSER: open to any user
seccomp = [line.split()[1] for line in open("/proc/self/status") if line.startswith("Seccomp:")]
print(json.dumps({"uid": os.getuid(), "pid": os.getpid(), "tmp_writable": tmp_writable,
                  "ifaces": [name for _, name in socket.if_nameindex()], "root": sorted(os.listdir("/")),
                  "unshare_errno": unshare_errno, "seccomp": seccomp}))
"""

_lock = threading.Lock()
_checked: dict[tuple[str, str], str | None] = {}  # (python, user) -> None if fine, else the reason


def ensure_sandbox(python: str | None = None, user: str = "nobody") -> str:
    """Check once per (python, user) that full isolation works; return the python to use.

    Raises ``SandboxUnavailable`` with the reason otherwise.
    """
    python = os.path.realpath(python) if python else _default_python()  # the real file: its prefix is bound
    key = (python, user)
    with _lock:
        if key not in _checked:
            _checked[key] = _probe(python, user)
    if _checked[key] is not None:
        raise SandboxUnavailable(_checked[key])
    return python


def _probe(python: str, user: str) -> str | None:
    if not sys.platform.startswith("linux"):
        return f"the sandbox needs Linux namespaces; this is {sys.platform}"
    if os.geteuid() != 0:
        return "the sandbox needs root (to create network/mount/PID namespaces and drop to an unprivileged user)"
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return f"the unprivileged user {user!r} does not exist"
    if uid == 0:
        return f"user {user!r} is root; the sandbox needs an unprivileged user"
    if not _world_executable(python):
        return f"{user!r} cannot execute the interpreter {python}"
    try:
        res = _run(_PROBE, timeout=20.0, memory_mb=512, cpu_seconds=None, max_processes=64, max_file_mb=1,
                   max_open_files=64, tmpfs_mb=1, python=python, user=user)
    except SandboxUnavailable as exc:
        return str(exc)
    if res.status != "passed":
        return f"the isolation probe did not run ({res.status}): {res.stderr.strip()[-500:]}"
    return _probe_verdict(json.loads(res.stdout.strip().splitlines()[-1]), uid, user, _root_entries(python))


def _probe_verdict(got: dict, uid: int, user: str, root_entries: list[str]) -> str | None:
    """What the probe saw that isolation should have hidden or forbidden, else None."""
    if got["uid"] != uid:
        return f"the probe ran as uid {got['uid']}, not {user!r} ({uid})"
    if set(got["ifaces"]) - {"lo"}:
        return f"the probe saw network interfaces {got['ifaces']}; a new network namespace has only 'lo'"
    if got["tmp_writable"]:
        return "the probe could write to /tmp outside its work dir"
    if got["pid"] != 1:
        return f"the probe was pid {got['pid']}, not 1 in a new PID namespace"
    if got["root"] != root_entries:
        return f"the probe saw {got['root']} in its /, not just the sandbox's {root_entries}"
    if got["seccomp"] != ["2"] or got["unshare_errno"] != errno.EPERM:
        return (f"no seccomp filter in the probe (Seccomp: {got['seccomp']}, "
                f"unshare errno {got['unshare_errno']}, want {errno.EPERM})")
    return None


def run_in_sandbox(code: str, *, timeout: float = 10.0, memory_mb: int = 1024, cpu_seconds: float | None = None,
                   max_processes: int = 32, max_file_mb: int = 16, max_open_files: int = 64, tmpfs_mb: int = 64,
                   python: str | None = None, user: str = "nobody") -> SandboxResult:
    """Run ``code`` as a Python program in the sandbox; exit code 0 means "passed".

    ``timeout`` is wall-clock seconds (then everything the program started is killed); ``cpu_seconds``
    defaults to it. ``memory_mb`` caps each process's address space and the whole run's memory (its
    cgroup, tmpfs files included); ``max_processes`` caps the run's processes and threads;
    ``max_file_mb`` caps any one file (stdout and stderr too); ``tmpfs_mb`` is the size of the only
    writable place, ``/tmp``. Raises ``SandboxUnavailable`` when the isolation cannot be set up.
    """
    limits = {"timeout": timeout, "memory_mb": memory_mb, "max_processes": max_processes,
              "max_file_mb": max_file_mb, "max_open_files": max_open_files, "tmpfs_mb": tmpfs_mb}
    bad = [f"{name} ({value})" for name, value in limits.items() if value <= 0]
    if bad:
        raise ValueError(f"run_in_sandbox: {', '.join(bad)} must be positive")
    python = ensure_sandbox(python, user)
    return _run(code, timeout=timeout, memory_mb=memory_mb, cpu_seconds=cpu_seconds, max_processes=max_processes,
                max_file_mb=max_file_mb, max_open_files=max_open_files, tmpfs_mb=tmpfs_mb, python=python, user=user)


def run_many(codes: Sequence[str], *, max_workers: int | None = None, **kwargs) -> list[SandboxResult]:
    """``run_in_sandbox`` over many programs, a few at a time (each is its own process; threads only wait)."""
    if not codes:
        return []
    ensure_sandbox(kwargs.get("python"), kwargs.get("user", "nobody"))  # fail once, before the pool
    workers = max_workers or min(len(codes), os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda c: run_in_sandbox(c, **kwargs), codes))
