"""The code sandbox's launcher: runs as root in the child (``python -I -B -c <this source> CFG``).

Standard library only: it runs under the plain interpreter chosen for the program, not our venv.
It is a separate exec rather than a ``preexec_fn`` because preexec_fn is unsafe in a threaded parent
(``run_many``) and runs after Popen's setuid, when unshare would fail. In order:

1. join the run's cgroup (memory and process limits for everything below);
2. unshare the mount, network, PID, IPC, UTS and cgroup namespaces;
3. build a new root on a small tmpfs: read-only bind mounts of what the interpreter needs, four
   device nodes, a size-capped tmpfs at ``/tmp`` holding the program in ``/tmp/work``; then
   ``pivot_root`` into it and detach the host's tree;
4. fork the program's PID 1, which mounts a fresh ``/proc``, sets its rlimits, ``no_new_privs``, drops
   to the unprivileged user, installs the seccomp filter and execs the interpreter on the program.

Any failure exits with ``SETUP_FAILED`` and a line starting with ``SETUP_TAG`` on stderr.
"""

import ctypes
import json
import os
import resource
import signal
import sys

SETUP_FAILED = 125
SETUP_TAG = "sandbox-setup:"

_NAMESPACES = 0x00020000 | 0x40000000 | 0x20000000 | 0x08000000 | 0x04000000 | 0x02000000  # NS NET PID IPC UTS CGROUP
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_MNT_DETACH = 2
_PR_SET_PDEATHSIG, _PR_SET_SECCOMP, _PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS, _SECCOMP_MODE_FILTER = 1, 22, 24, 38, 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long
_libc.syscall.argtypes = [ctypes.c_long, ctypes.c_char_p, ctypes.c_char_p]  # only used for pivot_root


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _fail(what):
    err = ctypes.get_errno()
    sys.stderr.write("%s %s: %s\n" % (SETUP_TAG, what, os.strerror(err) if err else "failed"))
    sys.stderr.flush()
    os._exit(SETUP_FAILED)


def _check(rc, what):
    if rc != 0:
        _fail(what)


def _mount(source, target, fstype, flags, data, what):
    enc = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    _check(_libc.mount(enc[0], enc[1], enc[2], flags, enc[3]), what)


def _bind_read_only(root, src, device=False):
    """Bind host ``src`` (a dir or a file) at the same path under ``root``, then make it read-only."""
    dst = root + src
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    _mount(src, dst, None, _MS_BIND, None, "bind %s" % src)
    # A bind mount takes its flags only from a remount; device nodes must keep working (no MS_NODEV).
    flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | (0 if device else _MS_NODEV)
    _mount(None, dst, None, flags, None, "make %s read-only" % src)


def _build_root(cfg, program):
    root = cfg["root"]
    _mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755", "mount the new root")
    for src in cfg["binds"]:
        _bind_read_only(root, src)
    for src in cfg["devices"]:
        _bind_read_only(root, src, device=True)
    for link, target in cfg["links"].items():
        os.makedirs(os.path.dirname(root + link), exist_ok=True)
        os.symlink(target, root + link)
    os.makedirs(root + "/proc")
    os.makedirs(root + "/tmp")
    # The only writable place: root-owned, with the program's own dir inside.
    tmpfs = "size=%dk,nr_inodes=%d,mode=0755" % (cfg["tmpfs_kb"], cfg["tmpfs_inodes"])
    _mount("tmpfs", root + "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, tmpfs, "mount the /tmp tmpfs")
    work = root + "/tmp/work"
    os.mkdir(work, 0o700)
    with open(work + "/main.py", "wb") as f:
        f.write(program)
    for path in (work, work + "/main.py"):
        os.chown(path, cfg["uid"], cfg["gid"])
    _mount(None, root, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, None, "make the new root read-only")


def _enter(root):
    """pivot_root into ``root`` and detach the host's tree (stacked on the same point by pivot_root("."))."""
    os.chdir(root)
    _check(_libc.syscall(155, b".", b"."), "pivot_root")  # glibc has no pivot_root wrapper
    _check(_libc.umount2(b".", _MNT_DETACH), "detach the host root")
    os.chdir("/")


def _install_seccomp(filter_hex):
    raw = bytes.fromhex(filter_hex)
    buf = ctypes.create_string_buffer(raw, len(raw))
    prog = _SockFprog(len(raw) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _check(_libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0), "seccomp filter")


def _become_program(cfg):
    """PID 1 of the new namespace: the last steps as root, then exec the program as ``cfg['uid']``."""
    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None, "mount /proc")
    for name, (soft, hard) in cfg["limits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    os.chdir("/tmp/work")
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")  # setuid binaries can't regain root
    cap = 0
    while _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:  # nor file capabilities; EINVAL past the last cap
        cap += 1
    os.setgroups([])
    os.setgid(cfg["gid"])
    os.setuid(cfg["uid"])
    # Set after setuid (which clears it): if the launcher is killed, so is the program.
    _check(_libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "parent-death signal")
    _install_seccomp(cfg["seccomp"])
    os.execve(cfg["python"], [cfg["python"], "-I", "-B", "main.py"], cfg["env"])


def _run(cfg):
    with open(cfg["program"], "rb") as f:
        program = f.read()
    for procs in cfg["cgroup_procs"]:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    _check(_libc.unshare(_NAMESPACES), "unshare(mount, net, pid, ipc, uts, cgroup)")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE, None, "make / private")  # nothing propagates to the host
    _build_root(cfg, program)
    _enter(cfg["root"])
    pid = os.fork()  # the child is PID 1 of the new PID namespace
    if pid:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        os._exit(code if code >= 0 else 128 - code)
    _become_program(cfg)


def main():
    try:
        _run(json.loads(sys.argv[1]))
    except (OSError, ValueError) as exc:
        sys.stderr.write("%s %s\n" % (SETUP_TAG, exc))
        os._exit(SETUP_FAILED)


if __name__ == "__main__":
    main()
