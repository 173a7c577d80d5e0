"""Attacks on the code sandbox: each is a small hostile program; each must fail inside the sandbox.

Every attack prints ``RESULT {"escaped": ...}`` (or is checked from the host). Where it is safe to run
on the host, the same program also runs there unsandboxed, as root (the positive control): it must
report ``escaped`` there, which shows the probe really detects the thing it looks for.
"""

import ctypes
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import reinforcepp
from reinforcepp.rewards.sandbox import SandboxUnavailable, ensure_sandbox, run_in_sandbox

try:
    PYTHON = ensure_sandbox()
    UNAVAILABLE = None
except SandboxUnavailable as exc:
    PYTHON, UNAVAILABLE = None, str(exc)

pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"sandbox isolation unavailable: {UNAVAILABLE}")

CHECKOUT = str(Path(reinforcepp.__file__).resolve().parents[1])

PRELUDE = r'''
import ctypes, errno, json, os, signal, socket, sys, time
H = json.loads(HOST_JSON)
libc = ctypes.CDLL(None, use_errno=True)
def report(escaped, **detail):
    print("RESULT " + json.dumps({"escaped": bool(escaped), **detail}, default=str), flush=True)
def attempt(fn):
    """(True, what fn returned) when it worked, else (False, the error)."""
    try:
        return True, fn()
    except Exception as exc:
        return False, "%s: %s" % (type(exc).__name__, str(exc)[:80])
def write_file(path, text, mode="w"):
    with open(path, mode) as f:  # closed here: an error on the implicit close would go unseen
        f.write(text)
    return path
def sys_rc(*args):
    """A raw syscall: (return value, errno)."""
    rc = libc.syscall(*[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return rc, ctypes.get_errno()
'''


@dataclass
class Attack:
    name: str
    body: str
    control: bool = True  # safe and meaningful to run unsandboxed on the host as root
    limits: dict = field(default_factory=dict)
    check: str = "result"  # "result": RESULT says not escaped; else the name of a host-side check below
    slow: bool = False


def _unix_talk(path_key):
    return f"""
def talk():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    s.connect(H[{path_key!r}])
    return s.recv(64).decode()
ok, got = attempt(talk)
report(ok and H["secret"] in got, got=got)
"""


def _read_any(paths_expr):
    return f"""
found = {{}}
for p in {paths_expr}:
    found[p] = attempt(lambda: sorted(os.listdir(p))[:5] if os.path.isdir(p) else open(p).read(200))
report(any(ok for ok, _ in found.values()), found=found)
"""


def _all_denied(calls_expr):
    """Each call is (name, zero-arg function returning (rc, errno)); escaped when any returned >= 0."""
    return f"""
res = {{}}
for name, fn in {calls_expr}:
    rc, err = fn()
    if rc == 0 and name.startswith("clone"):
        os._exit(0)  # the child of a clone that worked
    res[name] = [rc, errno.errorcode.get(err, err)]
report(any(rc >= 0 for rc, _ in res.values()), res=res)
"""


ATTACKS = [
    # --- the host's files, sockets and IPC are invisible ---
    Attack("unix_socket_in_host_tmp", _unix_talk("unix_tmp")),
    Attack("unix_socket_in_host_run", _unix_talk("unix_run")),
    Attack("abstract_unix_socket", _unix_talk("unix_abstract")),
    Attack("read_world_readable_file_in_srv", _read_any('[H["srv_file"]]')),
    # the checkout's parent may exist inside under the same name (a checkout in /tmp: the sandbox has its own
    # /tmp), so what counts there is seeing the checkout in it
    Attack("list_and_read_the_project_checkout", _read_any(
        '[H["checkout"], H["checkout"] + "/README.md", "/work"]') + """
ok, names = attempt(lambda: os.listdir(os.path.dirname(H["checkout"])))
if ok and os.path.basename(H["checkout"]) in names:
    report(True, parent=names[:5])
"""),
    Attack("read_etc_shadow_and_passwd", _read_any('["/etc/shadow", "/etc/passwd", "/etc/hostname"]')),
    Attack("list_host_home_root_run_mnt", _read_any('["/root", "/home", "/run", "/mnt", "/var", "/etc", "/opt"]')),
    Attack("read_a_host_file_in_dev_shm", _read_any('[H["shm_file"]]')),
    Attack("host_devices_and_sysfs", _read_any('["/sys/fs/cgroup", "/sys/kernel", "/dev/kmsg", "/dev/vda"]')),
    Attack("proc_1_root_and_proc_self_up", _read_any(
        '["/proc/1/root" + H["srv_file"], "/proc/self/root" + H["srv_file"], "/proc/self/cwd/../.." + H["srv_file"]]'
        ' + ["/proc/%s/root%s" % (p, H["srv_file"]) for p in os.listdir("/proc") if p.isdigit()]')),
    Attack("sysv_shared_memory_of_the_host",
           'rc = libc.shmget(H["sysv_key"], 0, 0)\nreport(rc >= 0, rc=rc, errno=ctypes.get_errno())'),
    Attack("environment_leak", """
leaks = [k for k, v in os.environ.items() if H["secret"] in v]
for p in ("/proc/self/environ", "/proc/1/environ"):
    ok, got = attempt(lambda: open(p, "rb").read().decode(errors="replace"))
    if ok and H["secret"] in got:
        leaks.append(p)
report(bool(leaks), leaks=leaks, names=sorted(os.environ))
"""),
    Attack("inherited_file_descriptor_leak", """
leaks = []
for fd in range(3, 1024):
    ok, got = attempt(lambda: os.pread(fd, 200, 0))
    if ok and H["secret"].encode() in got:
        leaks.append(fd)
report(bool(leaks), leaks=leaks, open_fds=sorted(int(f) for f in os.listdir("/proc/self/fd")))
"""),
    # --- writing anywhere but its tmpfs, and the tmpfs's own bounds ---
    Attack("write_outside_the_tmpfs", _read_any("[]").replace("found = {}", """found = {
    p: attempt(lambda: write_file(p, "x")) for p in (H["host_dir"] + "/x", H["tmp_target"])}""")),
    Attack("write_into_the_read_only_interpreter_files", """
tried = {}
for p in ("/rpp-escape", "/usr/lib/rpp-escape", os.__file__, "/dev/rpp-escape", "/proc/rpp-escape",
          H["checkout"] + "/rpp-escape"):
    tried[p] = attempt(lambda: write_file(p, "", "a"))
report(any(ok for ok, _ in tried.values()), tried=tried)
""", control=False),
    Attack("fill_the_tmpfs_past_its_cap", """
written, err = 0, None
try:
    for i in range(64):
        with open("f%d" % i, "wb") as f:
            for _ in range(4):
                f.write(b"x" * (1 << 20))
                f.flush()
                written += 1 << 20
except OSError as e:
    err = errno.errorcode.get(e.errno)
report(written > 8 << 20, written_mb=written >> 20, err=err)
""", control=False, limits={"tmpfs_mb": 8}),
    Attack("exhaust_the_tmpfs_inodes", """
n, err = 0, None
try:
    while n < 100000:
        os.close(os.open("i%d" % n, os.O_CREAT | os.O_WRONLY))
        n += 1
except OSError as e:
    err = errno.errorcode.get(e.errno)
report(n >= 16384, files=n, err=err)
""", control=False),
    # --- memory and processes: the cgroup bounds the sum ---
    Attack("memory_through_six_children_of_900_mib", """
N, SIZE = 6, 900 << 20
r, w = os.pipe()
kids = []
for _ in range(N):
    pid = os.fork()
    if pid == 0:
        os.close(r)
        b = bytearray(SIZE)
        b[::4096] = b"\\x01" * len(range(0, SIZE, 4096))  # touch every page
        os.write(w, b"%d\\n" % os.getpid())
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
os.close(w)
held, dead, buf = set(), set(), b""
deadline = time.time() + 25
while not set(kids) <= held | dead and time.time() < deadline:
    import select
    if select.select([r], [], [], 0.05)[0]:
        buf += os.read(r, 4096)
        held = {int(x) for x in buf.split()}
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if not pid:
            break
        dead.add(pid)
time.sleep(0.3)
for pid in kids:
    try:
        if os.waitpid(pid, os.WNOHANG)[0]:
            dead.add(pid)
    except ChildProcessError:
        dead.add(pid)
alive_holding = held - dead
report(len(alive_holding) * 900 > 1024, held_at_once=len(alive_holding), oom_killed=len(dead))
""", control=False, limits={"memory_mb": 1024, "timeout": 40}, check="memory_bounded", slow=True),
    Attack("fork_bomb", """
n, err = 0, None
try:
    while n < 10000:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
except OSError as e:
    err = errno.errorcode.get(e.errno)
report(n + 1 > 16, forked=n, err=err)
""", control=False, limits={"max_processes": 16}, check="result_and_no_survivor"),
    Attack("thread_bomb", """
import threading
stop, n, err = threading.Event(), 0, None
try:
    while n < 10000:
        threading.Thread(target=stop.wait, daemon=True).start()
        n += 1
except RuntimeError as e:
    err = str(e)
report(n + 1 > 16, threads=n, err=err)
os._exit(0)
""", control=False, limits={"max_processes": 16}),
    # --- network ---
    Attack("tcp_to_a_host_loopback_server", """
ok, got = attempt(lambda: socket.create_connection(("127.0.0.1", H["tcp_port"]), timeout=2).recv(64).decode())
report(ok and H["secret"] in got, got=got, ifaces=socket.if_nameindex())
"""),
    Attack("tcp_and_udp_to_external_addresses", """
tried = {}
for host in ("1.1.1.1", "8.8.8.8", "10.0.0.1", "169.254.169.254"):
    tried["tcp " + host] = attempt(lambda: socket.create_connection((host, 80), timeout=1).close())
    tried["udp " + host] = attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", (host, 53)))
report(any(ok for ok, _ in tried.values()), tried=tried)
""", control=False),  # the host itself has only loopback: a control would prove nothing
    Attack("raw_and_packet_sockets", _read_any("[]").replace("found = {}", """found = {
    "raw": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()),
    "packet": attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close())}""")),
    # --- privileges ---
    Attack("setuid_back_to_root", """
tried = {"setuid": attempt(lambda: os.setuid(0)), "setresuid": attempt(lambda: os.setresuid(0, 0, 0)),
         "setgid": attempt(lambda: os.setgid(0))}
report(os.geteuid() == 0 or any(ok for ok, _ in tried.values()), tried=tried, uid=os.getuid())
"""),
    Attack("exec_a_shell_or_setuid_binary", """
import subprocess
tried = {b: attempt(lambda: subprocess.run([b, "-c", "id"], capture_output=True, timeout=5).returncode)
         for b in ("/bin/sh", "/usr/bin/su", "/usr/bin/sudo", "/usr/bin/mount")}
report(any(ok for ok, _ in tried.values()), tried=tried)
"""),
    Attack("raise_the_hard_rlimits", """
import resource
inf = resource.RLIM_INFINITY
tried = {n: attempt(lambda: resource.setrlimit(getattr(resource, n), (inf, inf)))
         for n in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE")}
report(any(ok for ok, _ in tried.values()), tried=tried)
"""),
    Attack("write_proc_knobs", """
tried = {p: attempt(lambda: write_file(p, v)) for p, v in (
    ("/proc/sysrq-trigger", "h"), ("/proc/sys/kernel/hostname", "pwned"), ("/proc/self/oom_score_adj", "-1000"))}
report(any(ok for ok, _ in tried.values()), tried=tried)
""", control=False),  # never on the host: sysrq
    # --- new namespaces and the kernel's attack surface: the seccomp filter ---
    Attack("unshare_user_and_mount_namespaces", _all_denied(
        '[("unshare(USER|NS)", lambda: (libc.unshare(0x10000000 | 0x20000), ctypes.get_errno()))]')),
    Attack("unshare_network_namespace", _all_denied(
        '[("unshare(NET)", lambda: (libc.unshare(0x40000000), ctypes.get_errno()))]')),
    Attack("clone_and_clone3_with_namespace_flags", _all_denied("""[
    ("clone(NEWUSER)", lambda: sys_rc(56, 0x10000000 | 17, 0, 0, 0, 0)),
    ("clone3(NEWUSER)", lambda: sys_rc(435, ctypes.byref((ctypes.c_uint64 * 11)(0x10000000, 0, 0, 0, 17)), 88))]""")),
    Attack("setns_into_a_namespace", _all_denied(
        '[("setns", lambda: (libc.setns(os.open("/proc/self/ns/net", os.O_RDONLY), 0), ctypes.get_errno()))]')),
    Attack("mount_umount_pivot_root", _all_denied("""[
    ("mount", lambda: (libc.mount(b"tmpfs", b"/tmp/work", b"tmpfs", 0, None), ctypes.get_errno())),
    ("umount2", lambda: (libc.umount2(b"/proc", 2), ctypes.get_errno())),
    ("pivot_root", lambda: sys_rc(155, b"/tmp", b"/tmp/work"))]"""), control=False),
    Attack("chroot_escape", """
os.makedirs("jail", exist_ok=True)
ok, err = attempt(lambda: os.chroot("jail"))
if ok:
    for _ in range(64):
        os.chdir("..")
    os.chroot(".")
report(ok or os.path.exists("/srv") or os.path.exists("/home"), chroot=err, root=sorted(os.listdir("/")))
""", control=False),
    Attack("ptrace_and_read_a_sibling", """
pid = os.fork()
if pid == 0:
    time.sleep(30)
    os._exit(0)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
res = {"ptrace_attach": [libc.ptrace(16, pid, None, None), ctypes.get_errno()]}
buf = ctypes.create_string_buffer(8)
iov = (ctypes.c_void_p * 2)(ctypes.cast(buf, ctypes.c_void_p), 8)
res["process_vm_readv"] = list(sys_rc(310, pid, ctypes.byref(iov), 1, ctypes.byref(iov), 1, 0))
os.kill(pid, signal.SIGKILL)
report(any(rc >= 0 for rc, _ in res.values()), res=res)
"""),
    Attack("kernel_surface_syscalls", _all_denied("""[
    ("keyctl", lambda: sys_rc(250, 0, -3, 1)),
    ("userfaultfd", lambda: sys_rc(323, 0)),
    ("bpf", lambda: sys_rc(321, 0, ctypes.byref((ctypes.c_uint32 * 16)(1, 4, 4, 1)), 64)),
    ("perf_event_open", lambda: sys_rc(298, ctypes.byref((ctypes.c_uint32 * 32)(1, 128, 0)), 0, -1, -1, 0)),
    ("io_uring_setup", lambda: sys_rc(425, 1, ctypes.byref((ctypes.c_uint32 * 30)()))),
    ("init_module", lambda: sys_rc(175, None, 0, b""))]""")),
    Attack("x32_abi_syscall_to_bypass_the_filter", """
print("before", flush=True)
rc, err = sys_rc(0x40000000 | 272, 0x10000000)  # x32 unshare(NEWUSER)
report(rc == 0, rc=rc, errno=err)
""", control=False, check="killed_by_seccomp"),
    # --- signals, time and output ---
    Attack("kill_host_processes", """
res = {}
for name, pid in (("all", -1), ("init", 1), ("host sleeper", H["sleeper_pid"]), ("host test runner", H["host_pid"])):
    res[name] = attempt(lambda: os.kill(pid, signal.SIGKILL))
report(False, res=res)  # judged on the host: its processes are still alive
""", control=False, check="host_processes_alive"),
    Attack("signal_the_launcher", """
signal.signal(signal.SIGUSR1, lambda *a: None)
res = {"ppid": os.getppid(), "kill(ppid)": attempt(lambda: os.kill(os.getppid(), signal.SIGKILL)),
       "killpg(own group)": attempt(lambda: os.killpg(os.getpgrp(), signal.SIGUSR1))}
time.sleep(0.3)  # were the launcher dead, its parent-death SIGKILL would end us here
print("alive", flush=True)
report(False, res=res)
""", control=False, check="launcher_alive"),
    Attack("time_bomb_with_an_escaped_grandchild", """
if os.fork() == 0:
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if os.fork() == 0:
        time.sleep(60)
    os._exit(0)
while True:
    pass
""", control=False, limits={"timeout": 1}, check="timed_out_and_no_survivor"),
    Attack("stdout_and_stderr_flood", """
chunk = "y" * (1 << 20)
for _ in range(1024):
    sys.stdout.write(chunk)
    sys.stderr.write(chunk)
print("END")
""", control=False, limits={"max_file_mb": 1}, check="output_capped"),
]


# --- the host side: things to reach, and the checks that need the host ---

def _serve(server: socket.socket, secret: bytes) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return  # closed at teardown
        with conn:
            conn.sendall(secret)


@pytest.fixture(scope="module")
def host():
    """Targets on the host: sockets, files, a SysV segment, a process, an inheritable fd, an env var."""
    tag = uuid.uuid4().hex[:10]
    secret = f"rpp-secret-{tag}"
    h = {"secret": secret, "checkout": CHECKOUT, "host_pid": os.getpid(), "srv_file": f"/srv/rpp-attack-{tag}.txt",
         "shm_file": f"/dev/shm/rpp-attack-{tag}", "host_dir": tempfile.mkdtemp(prefix="rpp-attack-"),
         "unix_tmp": f"/tmp/rpp-attack-{tag}.sock", "unix_run": f"/run/rpp-attack-{tag}.sock",
         "unix_abstract": f"\0rpp-attack-{tag}", "sysv_key": int(tag[:7], 16), "tmp_target": f"/tmp/rpp-escape-{tag}"}
    os.chmod(h["host_dir"], 0o777)
    for path in (h["srv_file"], h["shm_file"]):
        Path(path).write_text(secret)
        os.chmod(path, 0o644)
    servers = []
    for key in ("unix_tmp", "unix_run", "unix_abstract"):
        s = socket.socket(socket.AF_UNIX)
        s.bind(h[key])
        if key != "unix_abstract":
            os.chmod(h[key], 0o777)
        servers.append(s)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    h["tcp_port"] = tcp.getsockname()[1]
    servers.append(tcp)
    for s in servers:
        s.listen(8)
        threading.Thread(target=_serve, args=(s, secret.encode()), daemon=True).start()
    libc = ctypes.CDLL(None, use_errno=True)
    shm_id = libc.shmget(h["sysv_key"], 4096, 0o1000 | 0o666)  # IPC_CREAT
    sleeper = subprocess.Popen(["sleep", "120"], user=65534)
    h["sleeper_pid"] = sleeper.pid
    fd = os.open(h["srv_file"], os.O_RDONLY)
    os.set_inheritable(fd, True)  # a careless Popen(close_fds=False) would hand it to the program
    os.environ["RPP_ATTACK_SECRET"] = secret
    h["inheritable_fd"] = fd
    try:
        yield h
    finally:
        os.environ.pop("RPP_ATTACK_SECRET", None)
        os.close(fd)
        sleeper.kill()
        sleeper.wait()
        if shm_id >= 0:
            libc.shmctl(shm_id, 0, None)  # IPC_RMID
        for s in servers:
            s.close()
        for path in (h["srv_file"], h["shm_file"], h["unix_tmp"], h["unix_run"], h["host_dir"] + "/x",
                     h["tmp_target"]):
            if os.path.exists(path):
                os.unlink(path)
        os.rmdir(h["host_dir"])


def _program(attack: Attack, h: dict) -> str:
    host_json = {k: v for k, v in h.items() if k != "inheritable_fd"}
    return PRELUDE.replace("HOST_JSON", repr(json.dumps(host_json))) + attack.body


def _result(stdout: str) -> dict | None:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT "):]) if lines else None


def _sandbox_processes() -> list[int]:
    """Live processes still in a sandbox cgroup (there should be none once a run returns)."""
    found = []
    for name in os.listdir("/proc"):
        try:
            text = Path(f"/proc/{name}/cgroup").read_text() if name.isdigit() else ""
        except OSError:
            continue
        if "rpp-sandbox-" in text:
            found.append(int(name))
    return found


def _check_on_host(check: str, res, h: dict) -> None:
    if check == "memory_bounded":
        assert res.memory_peak_mb is not None and res.memory_peak_mb <= 1024, res.memory_peak_mb
    elif check == "killed_by_seccomp":
        assert "before" in res.stdout and _result(res.stdout) is None
        assert res.returncode == 128 + signal.SIGSYS, (res.returncode, res.stderr)
    elif check == "host_processes_alive":
        os.kill(h["sleeper_pid"], 0)  # raises if the host's sleeper was killed
        assert Path(f"/proc/{h['sleeper_pid']}/status").read_text().find("State:\tZ") < 0
    elif check == "launcher_alive":
        assert res.passed and "alive" in res.stdout, res
    elif check == "timed_out_and_no_survivor":
        assert res.status == "timeout" and 1.0 <= res.duration < 3.0, res
    elif check == "output_capped":
        assert not res.passed and "END" not in res.stdout
        assert len(res.stdout) <= 4096 and len(res.stderr) <= 4096
        assert res.duration < 10
    if check in ("result_and_no_survivor", "timed_out_and_no_survivor"):
        assert _sandbox_processes() == []


# Checks where the program's own RESULT line must be there and say "not escaped".
RESULT_CHECKS = {"result", "memory_bounded", "result_and_no_survivor", "host_processes_alive", "launcher_alive"}


@pytest.mark.parametrize("attack", [pytest.param(a, id=a.name, marks=[pytest.mark.slow] if a.slow else [])
                                    for a in ATTACKS])
def test_attack_is_contained(attack, host):
    limits = {"timeout": 15, **attack.limits}
    res = run_in_sandbox(_program(attack, host), **limits)
    assert res.status != "error", res.stderr  # the sandbox itself was set up
    got = _result(res.stdout)
    if attack.check in RESULT_CHECKS:
        assert got is not None, (res.status, res.stdout[-500:], res.stderr[-1500:])
        assert got["escaped"] is False, got
    _check_on_host(attack.check, res, host)


CONTROLS = [a for a in ATTACKS if a.control]


@pytest.mark.parametrize("attack", CONTROLS, ids=[a.name for a in CONTROLS])
def test_positive_control_escapes_without_the_sandbox(attack, host):
    """Unsandboxed, as root on the host, the same probe does see its target: it can detect an escape."""
    proc = subprocess.run([PYTHON, "-I", "-B", "-c", _program(attack, host)], capture_output=True, text=True,
                          timeout=30, cwd=host["host_dir"], pass_fds=(host["inheritable_fd"],),
                          env={**os.environ, "RPP_ATTACK_SECRET": host["secret"]})
    got = _result(proc.stdout)
    assert got is not None, proc.stderr[-1500:]
    assert got["escaped"] is True, got


def test_the_suite_is_big_enough():
    assert len(ATTACKS) >= 25 and len({a.name for a in ATTACKS}) == len(ATTACKS)
