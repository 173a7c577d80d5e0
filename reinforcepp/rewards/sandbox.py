"""Run untrusted (model-generated) Python in an isolated child process.

Isolation, all set up by a small root launcher (``_LAUNCHER``) before it execs the program:

* new network namespace: no interfaces but a DOWN loopback, so every connect fails;
* new mount namespace: ``/tmp``, ``/var/tmp``, ``/dev/shm`` and ``/run/lock`` (the world-writable
  dirs) are covered by root-owned read-only-for-others tmpfs mounts; the fresh work dir is bind-mounted
  at ``/tmp/work`` and is the only place the program can write;
* new PID namespace: the program is PID 1 there, so when it dies the kernel kills every process it
  spawned (no escape from the wall-clock kill by ``setsid``), and ``/proc`` shows only the sandbox;
* ``resource.setrlimit``: CPU seconds, address space, processes, file size, open files, no core dumps;
* ``no_new_privs`` and then setgid/setuid to an unprivileged user (``nobody``);
* a wall-clock timeout that SIGKILLs the whole process group; the work dir is removed afterwards.

``ensure_sandbox()`` probes all of that once and raises ``SandboxUnavailable`` if any part is
missing: we never fall back to running code unsandboxed.

Python-level guards are not used: they are bypassable and the kernel boundaries above are not.
Note that RLIMIT_NPROC is counted per uid, so concurrent sandboxes share the process budget.
"""

from __future__ import annotations

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

__all__ = ["SandboxResult", "SandboxUnavailable", "ensure_sandbox", "run_in_sandbox", "run_many"]

# Exit code the launcher uses when it cannot build the sandbox (the message starts with _SETUP_TAG).
_SETUP_FAILED = 125
_SETUP_TAG = "sandbox-setup:"

# Runs as root inside the child (``python -I -B -c``); argv[1] is a JSON dict of settings.
# It is a separate exec rather than a ``preexec_fn`` because preexec_fn is unsafe in a threaded
# parent (run_many) and runs *after* Popen's setuid, when unshare would fail with EPERM.
_LAUNCHER = r"""
import ctypes, json, os, resource, sys
cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
def fail(what):
    err = ctypes.get_errno()
    sys.stderr.write("%s %s: %s\n" % (TAG, what, os.strerror(err) if err else "failed"))
    os._exit(SETUP_FAILED)
def check(rc, what):
    if rc != 0:
        fail(what)
CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID = 0x00020000, 0x40000000, 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
check(libc.unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID), "unshare(net, mount, pid)")
check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")  # no leaks to the host
for d in (b"/tmp", b"/var/tmp", b"/dev/shm", b"/run/lock"):
    if os.path.isdir(d) and not os.path.islink(d):
        check(libc.mount(b"tmpfs", d, b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, b"size=64k,mode=0755"),
              "cover %s" % d.decode())
os.mkdir(b"/tmp/work")
# "." is still the real work dir (our cwd), even though /tmp is now covered.
check(libc.mount(b".", b"/tmp/work", None, MS_BIND, None), "bind the work dir")
os.chdir("/tmp/work")
pid = os.fork()  # the child is PID 1 of the new PID namespace
if pid:
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)
try:
    check(libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount /proc")
    for name, value in cfg["limits"].items():
        resource.setrlimit(getattr(resource, name), (value[0], value[1]))
    check(libc.prctl(38, 1, 0, 0, 0), "no_new_privs")  # PR_SET_NO_NEW_PRIVS: setuid binaries can't regain root
    os.setgroups([])
    os.setgid(cfg["gid"])
    os.setuid(cfg["uid"])
    os.execve(cfg["python"], [cfg["python"], "-I", "-B", "main.py"], cfg["env"])
except OSError as exc:
    sys.stderr.write("%s %s\n" % (TAG, exc))
    os._exit(SETUP_FAILED)
""".replace("TAG", repr(_SETUP_TAG)).replace("SETUP_FAILED", str(_SETUP_FAILED))

_TAIL = 4096  # bytes of stdout / stderr kept in the result


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
    """This interpreter when ``nobody`` may run it, else the system python3 (often ours sits in /root)."""
    for candidate in (sys.executable, shutil.which("python3") or "", "/usr/bin/python3"):
        if candidate and _world_executable(candidate):
            return os.path.realpath(candidate)
    raise SandboxUnavailable(
        f"no Python interpreter that an unprivileged user can execute ({sys.executable} is not); "
        "pass python=... or install /usr/bin/python3")


def _tail(path: str) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - _TAIL))
        return f.read().decode("utf-8", "replace")


def _run(code: str, *, timeout: float, memory_mb: int, cpu_seconds: float | None, max_processes: int,
         max_file_mb: int, max_open_files: int, python: str, user: str) -> SandboxResult:
    """One sandboxed run, without the availability check (the probe itself uses this)."""
    entry = pwd.getpwnam(user)
    cpu = int(cpu_seconds if cpu_seconds is not None else timeout) + 1
    mem, fsize = memory_mb << 20, max_file_mb << 20
    cfg = {
        "python": python, "uid": entry.pw_uid, "gid": entry.pw_gid,
        "limits": {
            "RLIMIT_CPU": [cpu, cpu + 1], "RLIMIT_AS": [mem, mem], "RLIMIT_NPROC": [max_processes] * 2,
            "RLIMIT_FSIZE": [fsize, fsize], "RLIMIT_NOFILE": [max_open_files] * 2, "RLIMIT_CORE": [0, 0],
        },
        "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp/work", "TMPDIR": "/tmp/work",
                "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"},
    }
    base = tempfile.mkdtemp(prefix="rpp-sandbox-")  # root 0700: holds the captured output
    try:
        work = os.path.join(base, "work")
        os.mkdir(work, 0o700)
        with open(os.path.join(work, "main.py"), "w", encoding="utf-8") as f:
            f.write(code)
        os.chown(work, entry.pw_uid, entry.pw_gid)
        out_path, err_path = os.path.join(base, "stdout"), os.path.join(base, "stderr")
        # Output goes to files, not pipes, so RLIMIT_FSIZE bounds it and no reader thread is needed.
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            start = time.monotonic()
            proc = subprocess.Popen(
                [python, "-I", "-B", "-c", _LAUNCHER, json.dumps(cfg)], cwd=work, env={},
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
            try:
                proc.wait(timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:  # the launcher and the PID-1 program share this group; PID 1 dying ends the rest
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
            duration = time.monotonic() - start
        stdout, stderr = _tail(out_path), _tail(err_path)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    rc = proc.returncode
    if timed_out or rc == 128 + signal.SIGXCPU:
        status = "timeout"
    elif rc == _SETUP_FAILED and _SETUP_TAG in stderr:
        status = "error"
    else:
        status = "passed" if rc == 0 else "failed"
    return SandboxResult(status, None if timed_out else rc, stdout, stderr, duration)


_PROBE = """
import json, os, socket
try:
    open("/tmp/escape", "w").close(); tmp_writable = True
except OSError:
    tmp_writable = False
print(json.dumps({"uid": os.getuid(), "pid": os.getpid(), "tmp_writable": tmp_writable,
                  "ifaces": [name for _, name in socket.if_nameindex()]}))
"""

_lock = threading.Lock()
_checked: dict[tuple[str, str], str | None] = {}  # (python, user) -> None if fine, else the reason


def ensure_sandbox(python: str | None = None, user: str = "nobody") -> str:
    """Check once per (python, user) that full isolation works; return the python to use.

    Raises ``SandboxUnavailable`` with the reason otherwise.
    """
    python = python or _default_python()
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
    res = _run(_PROBE, timeout=20.0, memory_mb=512, cpu_seconds=None, max_processes=64, max_file_mb=1,
               max_open_files=64, python=python, user=user)
    if res.status != "passed":
        return f"the isolation probe did not run ({res.status}): {res.stderr.strip()[-500:]}"
    got = json.loads(res.stdout.strip().splitlines()[-1])
    if got["uid"] != uid:
        return f"the probe ran as uid {got['uid']}, not {user!r} ({uid})"
    if set(got["ifaces"]) - {"lo"}:
        return f"the probe saw network interfaces {got['ifaces']}; a new network namespace has only 'lo'"
    if got["tmp_writable"]:
        return "the probe could write to /tmp outside its work dir"
    if got["pid"] != 1:
        return f"the probe was pid {got['pid']}, not 1 in a new PID namespace"
    return None


def run_in_sandbox(code: str, *, timeout: float = 10.0, memory_mb: int = 1024, cpu_seconds: float | None = None,
                   max_processes: int = 32, max_file_mb: int = 16, max_open_files: int = 64,
                   python: str | None = None, user: str = "nobody") -> SandboxResult:
    """Run ``code`` as a Python program in the sandbox; exit code 0 means "passed".

    ``timeout`` is wall-clock seconds (then the whole process group is killed); ``cpu_seconds``
    defaults to it. ``memory_mb`` caps the address space. Raises ``SandboxUnavailable`` when the
    isolation cannot be set up.
    """
    if timeout <= 0 or memory_mb <= 0:
        raise ValueError(f"run_in_sandbox: timeout ({timeout}) and memory_mb ({memory_mb}) must be positive")
    python = ensure_sandbox(python, user)
    return _run(code, timeout=timeout, memory_mb=memory_mb, cpu_seconds=cpu_seconds, max_processes=max_processes,
                max_file_mb=max_file_mb, max_open_files=max_open_files, python=python, user=user)


def run_many(codes: Sequence[str], *, max_workers: int | None = None, **kwargs) -> list[SandboxResult]:
    """``run_in_sandbox`` over many programs, a few at a time (each is its own process; threads only wait)."""
    if not codes:
        return []
    ensure_sandbox(kwargs.get("python"), kwargs.get("user", "nobody"))  # fail once, before the pool
    workers = max_workers or min(len(codes), os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda c: run_in_sandbox(c, **kwargs), codes))
