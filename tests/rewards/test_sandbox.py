"""The code sandbox: isolation holds against hostile programs, and it refuses to run without it."""

import errno
import json
import os
import re
import socket
import struct
import time
import uuid

import pytest

from reinforcepp.rewards import sandbox, sandbox_cgroup
from reinforcepp.rewards.sandbox import SandboxResult, SandboxUnavailable, ensure_sandbox, run_in_sandbox, run_many
from reinforcepp.rewards.sandbox_seccomp import CLONE, CLONE3, DENIED, NAMESPACE_FLAGS, filter_bytes

try:
    ensure_sandbox()
    UNAVAILABLE = None
except SandboxUnavailable as exc:
    UNAVAILABLE = str(exc)

needs_sandbox = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"sandbox isolation unavailable: {UNAVAILABLE}")


def _nobody_processes() -> list[int]:
    """PIDs owned by nobody (the sandbox user) that are still alive, zombies excluded."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as f:
                    status = f.read()
            except OSError:
                continue
            uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
            if uid == "65534" and "\nState:\tZ" not in status:
                pids.append(int(name))
    return pids


def _wait_no_nobody_processes(seconds: float = 3.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _nobody_processes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# --- refusal: these run everywhere --------------------------------------------------------------

def test_refuses_without_root_and_never_runs_the_code(monkeypatch):
    monkeypatch.setattr(sandbox, "_checked", {})
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sandbox, "_run", lambda *a, **k: pytest.fail("code ran without a sandbox"))
    with pytest.raises(SandboxUnavailable, match="needs root"):
        run_in_sandbox("print('hi')", python="/usr/bin/python3")
    with pytest.raises(SandboxUnavailable, match="needs root"):
        run_many(["print('hi')"], python="/usr/bin/python3")


def test_refuses_a_missing_user_and_a_probe_that_sees_the_network(monkeypatch):
    monkeypatch.setattr(sandbox, "_checked", {})
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 0)
    monkeypatch.setattr(sandbox, "_world_executable", lambda path: True)
    with pytest.raises(SandboxUnavailable, match="'no-such-user-x' does not exist"):
        ensure_sandbox("/usr/bin/python3", user="no-such-user-x")
    # A probe that reports a real interface means no network namespace: refuse.
    leaky = SandboxResult("passed", 0, '{"uid": 65534, "pid": 1, "tmp_writable": false, "ifaces": ["lo", "eth0"]}',
                          "", 0.1)
    monkeypatch.setattr(sandbox, "_run", lambda *a, **k: leaky)
    with pytest.raises(SandboxUnavailable, match="network interfaces"):
        ensure_sandbox("/usr/bin/python3", user="nobody")
    with pytest.raises(SandboxUnavailable, match="network interfaces"):  # cached, still refused
        run_in_sandbox("print(1)", python="/usr/bin/python3")


def test_rejects_bad_limits():
    with pytest.raises(ValueError, match="timeout"):
        run_in_sandbox("pass", timeout=0)
    with pytest.raises(ValueError, match=r"max_processes \(0\), tmpfs_mb \(-1\) must be positive"):
        run_in_sandbox("pass", max_processes=0, tmpfs_mb=-1)


_GOOD_PROBE = {"uid": 65534, "pid": 1, "tmp_writable": False, "ifaces": ["lo"], "root": ["dev", "proc", "tmp", "usr"],
               "unshare_errno": errno.EPERM, "seccomp": ["2"]}


@pytest.mark.parametrize("change, message", [
    ({}, None),
    ({"root": ["dev", "home", "proc", "tmp", "usr"]}, "saw .*home.* in its /"),
    ({"seccomp": ["0"], "unshare_errno": 0}, "no seccomp filter"),
    ({"unshare_errno": errno.EINVAL}, "no seccomp filter"),
])
def test_probe_verdict_refuses_a_visible_host_or_no_filter(change, message):
    verdict = sandbox._probe_verdict({**_GOOD_PROBE, **change}, 65534, "nobody", ["dev", "proc", "tmp", "usr"])
    assert verdict is None if message is None else re.search(message, verdict)


def test_refuses_when_the_cgroup_cannot_be_made(monkeypatch):
    monkeypatch.setattr(sandbox, "_checked", {})
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 0)
    monkeypatch.setattr(sandbox, "_world_executable", lambda path: True)

    def no_cgroup(*_):
        raise OSError("no cgroup hierarchy with the memory and pids controllers")

    monkeypatch.setattr(sandbox_cgroup, "create", no_cgroup)
    monkeypatch.setattr(sandbox.subprocess, "Popen", lambda *a, **k: pytest.fail("code ran without a cgroup"))
    with pytest.raises(SandboxUnavailable, match="cannot set up the sandbox: no cgroup hierarchy"):
        ensure_sandbox("/usr/bin/python3", user="nobody")


def test_cgroup_v2_when_delegated_else_v1(monkeypatch, tmp_path):
    """The hierarchy choice on a fake cgroupfs: v2 where our cgroup can enable memory+pids, else v1."""
    v2, mem, pids = tmp_path / "unified" / "job", tmp_path / "memory" / "a", tmp_path / "pids"
    for d in (v2, mem, pids):
        d.mkdir(parents=True)
    (v2 / "cgroup.controllers").write_text("cpu memory pids\n")
    (v2 / "cgroup.subtree_control").write_text("cpu\n")
    mounts = [(str(tmp_path / "unified"), "/", "cgroup2", {"rw"}),
              (str(tmp_path / "memory"), "/jobs", "cgroup", {"rw", "memory"}),
              (str(pids), "/", "cgroup", {"rw", "pids"})]
    own = {"": "/job", "memory": "/jobs/a", "pids": "/"}
    assert sandbox_cgroup._v2_parent(mounts, own) == str(v2)
    assert (v2 / "cgroup.subtree_control").read_text() == "+memory +pids"  # delegated to its children
    assert sandbox_cgroup._v1_parents(mounts, own) == [str(mem), str(pids)]  # the memory mount shows /jobs
    (v2 / "cgroup.controllers").write_text("cpu hugetlb\n")  # this host's kind: controllers bound to v1
    assert sandbox_cgroup._v2_parent(mounts, own) is None
    assert sandbox_cgroup._v1_parents(mounts[:2], own) is None  # no pids hierarchy: refused


def _run_filter(prog: bytes, nr: int, arch: int = 0xC000003E, arg0: int = 0) -> int:
    """A classic-BPF interpreter for the few opcodes the filter uses, on one syscall's seccomp_data."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    ins = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = ins[pc]
        if code == 0x20:
            acc = struct.unpack_from("=I", data, k)[0]
        elif code == 0x06:
            return k
        else:
            taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf
        pc += 1


def test_seccomp_filter_decisions():
    prog = filter_bytes("x86_64")
    allow, kill = 0x7FFF0000, 0x80000000
    eperm, enosys = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    assert _run_filter(prog, 39) == allow  # getpid
    assert _run_filter(prog, 0) == allow and _run_filter(prog, 59) == allow  # read, execve
    assert all(_run_filter(prog, nr) == eperm for nr in DENIED.values())
    assert _run_filter(prog, CLONE, arg0=17) == allow  # fork(): clone(SIGCHLD)
    assert _run_filter(prog, CLONE, arg0=0x3D0F00) == allow  # pthread_create's flags
    for flag in (0x00020000, 0x10000000, 0x20000000, 0x40000000):  # NEWNS, NEWUSER, NEWPID, NEWNET
        assert flag & NAMESPACE_FLAGS and _run_filter(prog, CLONE, arg0=flag | 17) == eperm
    assert _run_filter(prog, CLONE3) == enosys
    assert _run_filter(prog, 0x40000000 | 39) == kill  # x32 ABI
    assert _run_filter(prog, 20, arch=0x40000003) == kill  # i386 (int 0x80)
    with pytest.raises(OSError, match="x86_64 syscall numbers; this machine is aarch64"):
        filter_bytes("aarch64")


# --- isolation ------------------------------------------------------------------------------------

@needs_sandbox
def test_a_normal_program_passes_and_a_failing_one_fails():
    ok = run_in_sandbox("print(sum(range(10)))", timeout=5)
    assert ok.passed and ok.status == "passed" and ok.returncode == 0
    assert ok.stdout.strip() == "45"
    bad = run_in_sandbox("assert 1 + 1 == 3, 'arithmetic'", timeout=5)
    assert not bad.passed and bad.status == "failed" and bad.returncode == 1
    assert "AssertionError: arithmetic" in bad.stderr
    syntax = run_in_sandbox("def f(:\n", timeout=5)
    assert syntax.status == "failed" and "SyntaxError" in syntax.stderr


@needs_sandbox
def test_no_network_even_to_a_loopback_server_outside():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # reachable from outside
        server.accept()[0].close()
        code = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                "    print('CONNECTED')\nexcept OSError as e:\n    print('blocked', e.errno)\n"
                "print(sorted(n for _, n in socket.if_nameindex()))\n")
        res = run_in_sandbox(code, timeout=5)
        assert res.passed, res.stderr
        assert "CONNECTED" not in res.stdout and "blocked" in res.stdout
        assert "['lo']" in res.stdout
        with pytest.raises(BlockingIOError):  # nothing reached the server
            server.accept()
    finally:
        server.close()


@needs_sandbox
def test_cannot_write_outside_its_dir_and_the_dir_is_removed(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox.tempfile, "tempdir", str(tmp_path))  # where the work dir is made
    name = f"rpp-escape-{uuid.uuid4().hex}"
    targets = [f"/tmp/{name}", f"/root/{name}", f"/var/tmp/{name}", f"/{name}"]
    code = ("import os\n"
            f"open('/dev/shm/{name}', 'w').write('x')\n"  # /dev/shm is its own dir: lands in its tmpfs
            f"assert os.path.exists('/tmp/work/{name}')\n"
            f"for path in {targets!r}:\n"
            "    try:\n        open(path, 'w').write('x')\n        print('WROTE', path)\n"
            "    except OSError as e:\n        print('denied', path, e.errno)\n"
            "open('mine.txt', 'w').write('ok')\nprint('own', open('mine.txt').read(), os.getuid())\n")
    res = run_in_sandbox(code, timeout=5)
    assert res.passed, res.stderr
    assert "WROTE" not in res.stdout and res.stdout.count("denied") == len(targets)
    assert "own ok 65534" in res.stdout  # its own dir works, as nobody
    assert not any(os.path.exists(t) for t in [*targets, f"/dev/shm/{name}"])
    assert os.listdir(tmp_path) == []  # work dir and captured output removed


@needs_sandbox
def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("RPP_SECRET_TOKEN", "hunter2")
    res = run_in_sandbox("import os; print(sorted(os.environ))", timeout=5)
    assert res.passed and "RPP_SECRET_TOKEN" not in res.stdout and "PATH" in res.stdout


@needs_sandbox
def test_fork_bomb_is_bounded():
    code = ("import os\nn = 0\nwhile True:\n    try:\n        os.fork()\n        n += 1\n"
            "    except OSError:\n        print('fork refused', flush=True)\n        break\n")
    start = time.monotonic()
    res = run_in_sandbox(code, timeout=3, max_processes=16)
    assert time.monotonic() - start < 5
    assert "fork refused" in res.stdout
    assert _wait_no_nobody_processes() == []


@needs_sandbox
def test_memory_bomb_fails():
    res = run_in_sandbox("chunks = [bytearray(256 << 20) for _ in range(16)]\nprint('GOT 4 GiB')",
                         timeout=10, memory_mb=256)
    assert res.status == "failed" and "MemoryError" in res.stderr and "GOT" not in res.stdout


@needs_sandbox
def test_infinite_loop_is_killed_with_its_escaped_children():
    # The child leaves the process group (setsid); the PID namespace still takes it down.
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
            "while True:\n    pass\n")
    res = run_in_sandbox(code, timeout=1)
    assert res.status == "timeout" and not res.passed and res.returncode is None
    assert 1.0 <= res.duration < 3.0
    assert _wait_no_nobody_processes() == []


@needs_sandbox
def test_output_is_bounded_and_batches_keep_order():
    res = run_in_sandbox("import sys\nfor _ in range(10**6): sys.stdout.write('y' * 100)\nprint('END')",
                         timeout=10, max_file_mb=1)
    assert res.status == "failed" and "END" not in res.stdout and len(res.stdout) <= 4096
    results = run_many([f"print({i})" if i % 2 else "raise SystemExit(3)" for i in range(4)], timeout=5)
    assert [r.status for r in results] == ["failed", "passed", "failed", "passed"]
    assert results[1].stdout.strip() == "1" and results[0].returncode == 3


@needs_sandbox
def test_the_program_sees_only_its_minimal_root_and_a_capped_tmpfs():
    code = ("import json, os\nst = os.statvfs('/tmp')\n"
            "print(json.dumps([sorted(os.listdir('/')), os.getcwd(), st.f_blocks * st.f_frsize, "
            "sorted(os.listdir('/dev')), os.path.realpath('/dev/shm')]))\n"
            "import multiprocessing\nwith multiprocessing.Pool(2) as pool:\n    print(pool.map(abs, [-1, -2]))\n")
    res = run_in_sandbox(code, timeout=5, tmpfs_mb=3)
    assert res.passed, res.stderr
    first, pool = res.stdout.splitlines()
    root, cwd, tmp_bytes, dev, shm = json.loads(first)
    assert root == sandbox._root_entries(sandbox.ensure_sandbox()) and "home" not in root and "etc" not in root
    assert cwd == "/tmp/work" and tmp_bytes == 3 << 20
    assert {"null", "zero", "random", "urandom"} <= set(dev) and "pts" not in dev and "kmsg" not in dev
    assert shm == "/tmp/work" and pool == "[1, 2]"  # multiprocessing's semaphores live in the tmpfs


@needs_sandbox
def test_the_cgroup_is_removed_after_a_timeout(monkeypatch):
    made = []
    create = sandbox_cgroup.create
    monkeypatch.setattr(sandbox_cgroup, "create", lambda *a: made.append(create(*a)) or made[-1])
    res = run_in_sandbox("import os, time\nos.fork()\ntime.sleep(30)\n", timeout=0.5)
    assert res.status == "timeout" and res.memory_peak_mb is not None
    assert len(made) == 1 and made[0].dirs and not any(os.path.exists(d) for d in made[0].dirs)
