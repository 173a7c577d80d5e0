"""The reward server under load and abuse, on loopback: `reinforcepp serve-reward` runs in its own process
so that its threads and memory can be read from /proc. Each test prints its figures (run with -s to see
them); docs/reliability.md quotes them."""

import http.client
import json
import os
import random
import selectors
import socket
import string
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from reinforcepp.rewards import RewardError
from reinforcepp.rewards.http_server import MiB
from reinforcepp.rewards.remote import TOKEN_ENV, RemoteRewardFunction
from reinforcepp.rewards.toy import target_char_share

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/PID/status")

FUNCTION = "reinforcepp.rewards.toy:target_char_share"
WORKERS = 4


@contextmanager
def served(*flags, env=None):
    """`serve-reward` in a subprocess on a free loopback port: yields (process, port)."""
    command = [sys.executable, "-m", "reinforcepp.rewards.serve", "--function", FUNCTION, "--port", "0",
               "--workers", str(WORKERS), *flags]
    environ = {k: v for k, v in os.environ.items() if k != TOKEN_ENV} | (env or {})
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ)
    try:
        line = proc.stdout.readline()
        assert "serving reward" in line, proc.stderr.read()
        yield proc, int(line.split(" on ", 1)[1].split()[0].rsplit(":", 1)[1])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def status(pid: int) -> dict[str, int]:
    """Threads, and VmRSS / VmHWM in bytes, of a process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {"threads": int(fields["Threads"]), **{k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}}


def reset_peak(pid: int) -> bool:
    """Start VmHWM afresh (Linux: write 5 to clear_refs); False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def exchange(port: int, data: bytes, *, timeout: float = 5.0) -> tuple[int, dict, dict]:
    """Send raw bytes, read one answer: (status, JSON body, headers)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read()), dict(response.getheaders())


def post_head(length: str | None, *extra: str) -> bytes:
    lines = ["POST /score HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", *extra]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def score_body(completions: list[str]) -> bytes:
    return json.dumps({"prompts": ["p"] * len(completions), "completions": completions}).encode()


def test_2000_requests_from_16_threads_get_only_right_answers():
    rng = random.Random(0)
    batches = [["".join(rng.choices("ab c", k=rng.randint(1, 40))) for _ in range(rng.randint(1, 4))] for _ in range(2000)]
    wrong, failed, latencies = [], [], []
    with served() as (proc, port):
        client = RemoteRewardFunction(f"http://127.0.0.1:{port}", retries=0)

        def work(mine):
            for batch in mine:
                start = time.monotonic()
                try:
                    got = client(["p"] * len(batch), batch)
                except RewardError as exc:
                    failed.append(str(exc))
                    continue
                latencies.append(time.monotonic() - start)
                if got != target_char_share(batch):
                    wrong.append(batch)

        start = time.monotonic()
        threads = [threading.Thread(target=work, args=(batches[i::16],)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - start
        after = status(proc.pid)
    latencies.sort()
    print(f"\n2000 requests / 16 threads: {elapsed:.1f} s, p50 {latencies[len(latencies) // 2] * 1e3:.1f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.1f} ms, server threads {after['threads']}")
    assert not failed and not wrong and len(latencies) == 2000
    assert after["threads"] <= WORKERS + 2  # the workers, the event loop's thread, nothing per connection


@pytest.mark.slow  # waits out the idle timeout
def test_400_idle_connections_hold_no_threads_and_are_closed_after_the_idle_timeout():
    idle_timeout = 3.0
    with served("--idle-timeout", str(idle_timeout)) as (proc, port):
        exchange(port, b"GET /health HTTP/1.1\r\n\r\n")  # the workers have started
        before = status(proc.pid)
        idle = {}
        for i in range(400):
            sock = socket.create_connection(("127.0.0.1", port))
            if i % 2:  # half send a head that never ends (the classic slowloris)
                sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nX-a: b\r\n")
            idle[sock] = time.monotonic()
        dribbler = socket.create_connection(("127.0.0.1", port))  # active, but its head never completes
        idle[dribbler] = time.monotonic()
        time.sleep(0.3)
        during = status(proc.pid)
        start = time.monotonic()
        answer = RemoteRewardFunction(f"http://127.0.0.1:{port}", retries=0, timeout=idle_timeout)(["p"], ["aab"])
        latency = time.monotonic() - start
        assert answer == target_char_share(["aab"])
        held_for = closed_after(idle, dribbler, deadline=time.monotonic() + idle_timeout + 10)
    spread = sorted(held_for.values())
    print(f"\nslowloris 400 + 1 dribbling: server threads {before['threads']} -> {during['threads']}, a normal "
          f"request answered in {latency * 1e3:.1f} ms, the idle ones closed {spread[0]:.2f}-{spread[-1]:.2f} s after "
          f"they connected, the dribbling one after {held_for[dribbler]:.2f} s (idle timeout {idle_timeout} s)")
    assert during["threads"] == before["threads"] <= WORKERS + 2
    assert latency < idle_timeout / 2  # answered at once, not after the idle ones are let go
    assert len(held_for) == len(idle) and idle_timeout - 0.1 < spread[0] and spread[-1] < idle_timeout + 3


def closed_after(opened: dict, dribbler: socket.socket, *, deadline: float) -> dict:
    """Seconds from each socket's connect to the server closing it without an answer; the dribbler
    sends a byte of a head that never ends every 0.1 s meanwhile."""
    selector = selectors.DefaultSelector()
    for sock in opened:
        selector.register(sock, selectors.EVENT_READ)
    held_for = {}
    while len(held_for) < len(opened) and time.monotonic() < deadline:
        if dribbler not in held_for:
            with suppress(OSError):
                dribbler.sendall(b"X")
        for key, _ in selector.select(timeout=0.1):
            sock = key.fileobj
            with suppress(ConnectionResetError):
                assert sock.recv(1) == b""  # closed, not answered
            held_for[sock] = time.monotonic() - opened[sock]
            selector.unregister(sock)
            sock.close()
    for sock in opened:
        sock.close()
    return held_for


def test_a_slow_body_gets_408_after_the_read_timeout():
    with served("--read-timeout", "1") as (proc, port), socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(post_head("100") + b'{"prom')
        start = time.monotonic()
        response = http.client.HTTPResponse(sock)
        response.begin()
        waited = time.monotonic() - start
        assert response.status == 408 and "not received within 1.0 s" in json.loads(response.read())["error"]
        assert 0.5 < waited < 3


@pytest.mark.parametrize("head, code, says", [
    (post_head(None), 411, "Content-Length header required"),
    (post_head("-1"), 400, "non-negative integer"),
    (post_head("abc"), 400, "non-negative integer"),
    (post_head("1e3"), 400, "non-negative integer"),
    (post_head(str(300 * MiB)), 413, f"exceeds the limit of {64 * MiB} bytes"),
    (post_head("5", "Content-Length: 6"), 400, "conflicting Content-Length"),
    (post_head(None, "Transfer-Encoding: chunked"), 411, "chunked"),
    (b"POST /score HTTP/1.1\r\n" + b"X-pad: " + b"x" * 70_000 + b"\r\n\r\n", 431, "request head exceeds"),
])
def test_bad_lengths_are_refused_before_the_body(server_for_lengths, head, code, says):
    """No body byte is sent: the answer comes from the head alone."""
    got, body, _ = exchange(server_for_lengths, head, timeout=3)
    assert got == code and says in body["error"]


@pytest.fixture(scope="module")
def server_for_lengths():
    with served() as (_, port):
        yield port


def test_concurrent_big_bodies_keep_the_server_memory_bounded():
    body_mb, buffered_mb = 16, 32
    flags = ("--max-body-mb", str(body_mb), "--max-buffered-mb", str(buffered_mb), "--workers", "2")
    with served(*flags) as (proc, port):
        exchange(port, post_head(str(len(score_body(["a"])))) + score_body(["a"]))  # warm up
        # 4 x 200 MiB, as in the issue: refused from the head, the bodies are never held
        base = status(proc.pid)["VmRSS"]
        reset_peak(proc.pid)
        refusals = run_concurrently(4, lambda: exchange(port, post_head(str(200 * MiB)) + b"a" * MiB)[0])
        huge_growth = status(proc.pid)["VmHWM"] - base
        # 8 x (just under the cap), valid: at most buffered_mb of bodies are held, the rest get 503
        text = "ab" * ((body_mb * MiB - 100) // 2)
        body = score_body([text])
        base = status(proc.pid)["VmRSS"]
        reset_peak(proc.pid)
        answers = run_concurrently(8, lambda: exchange(port, post_head(str(len(body))) + body, timeout=30))
        growth = status(proc.pid)["VmHWM"] - base
    print(f"\n4 x 200 MiB: {refusals}, RSS peak +{huge_growth / MiB:.1f} MiB; 8 x {len(body) / MiB:.1f} MiB: "
          f"{sorted(a[0] for a in answers)}, RSS peak +{growth / MiB:.1f} MiB (bound {buffered_mb} MiB held)")
    assert refusals == [413] * 4 and huge_growth < 16 * MiB
    assert all(a[0] in (200, 503) for a in answers) and any(a[0] == 200 for a in answers)
    assert all(a[1] == {"rewards": [0.5]} for a in answers if a[0] == 200)
    assert all("server busy" in a[1]["error"] and a[2]["Retry-After"] == "1" for a in answers if a[0] == 503)
    # held raw bodies, plus per worker (2) its body decoded and parsed (two more copies of an ASCII body),
    # plus 16 MiB for the allocator; all 8 bodies held and parsed at once would take 3 copies of each
    assert growth < (buffered_mb + 2 * 2 * body_mb + 16) * MiB < 8 * 3 * len(body)


def run_concurrently(n: int, call):
    results = [None] * n

    def one(i):
        results[i] = call()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_more_connections_than_the_bound_get_503():
    with served("--max-connections", "8") as (proc, port):
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]  # accepted first, in order
        got, body, headers = exchange(port, b"GET /health HTTP/1.1\r\n\r\n")
        assert got == 503 and "8 connections open" in body["error"]
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 5  # the server sees the closes
        while exchange(port, b"GET /health HTTP/1.1\r\n\r\n")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert exchange(port, b"GET /health HTTP/1.1\r\n\r\n")[0] == 200


def test_the_token_is_required_accepted_and_rejected(tmp_path, monkeypatch):
    token = "s3cret-" + "".join(random.Random(1).choices(string.ascii_letters, k=20))
    path = tmp_path / "token"
    path.write_text(token + "\n")
    with served("--token-file", str(path)) as (proc, port):
        body = score_body(["ab"])
        missing = exchange(port, post_head(str(len(body))) + body)
        wrong = exchange(port, post_head(str(len(body)), "Authorization: Bearer " + token[:-1] + "x") + body)
        right = exchange(port, post_head(str(len(body)), f"Authorization: Bearer {token}") + body)
        assert missing[0] == wrong[0] == 401 and missing[1] == wrong[1] == {"error": "missing or wrong bearer token"}
        assert missing[2]["WWW-Authenticate"] == "Bearer" and token not in json.dumps(missing[1])
        assert right[0] == 200 and right[1] == {"rewards": target_char_share(["ab"])}
        url = f"http://127.0.0.1:{port}"
        with pytest.raises(RewardError, match=rf"HTTP 401.*missing or wrong bearer token.*\${TOKEN_ENV}"):
            RemoteRewardFunction(url, retries=0)(["p"], ["ab"])
        monkeypatch.setenv(TOKEN_ENV, token)
        assert RemoteRewardFunction(url, retries=0)(["p"], ["ab"]) == target_char_share(["ab"])


@pytest.mark.parametrize("flags, env, says", [
    (("--host", "0.0.0.0"), {}, "needs a bearer token"),
    (("--host", ""), {}, "needs a bearer token"),
    (("--token", "short"), {}, "at least 16 printable"),
    ((), {TOKEN_ENV: "has a space in it, quite long"}, "without spaces"),
])
def test_a_missing_or_bad_token_stops_the_server_with_one_line(flags, env, says):
    environ = {k: v for k, v in os.environ.items() if k != TOKEN_ENV} | env
    done = subprocess.run([sys.executable, "-m", "reinforcepp.rewards.serve", "--function", FUNCTION, "--port", "0", *flags],
                          capture_output=True, text=True, env=environ, timeout=30)
    lines = [line for line in done.stderr.splitlines() if not line.startswith("warning: --token is visible")]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0]
