"""Remote rewards over loopback HTTP: RewardServer <-> RemoteRewardFunction."""

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from reinforcepp.rewards import RewardError, score_completions
from reinforcepp.rewards.http_server import HttpError, Limits, MiB, body_length, parse_head, token_matches
from reinforcepp.rewards.remote import (
    TOKEN_ENV,
    RemoteRewardFunction,
    RewardServer,
    is_loopback,
    remote_reward,
    reward_from_env,
)
from reinforcepp.rewards.serve import main as serve_main


def length_with_label(prompts, completions, label, weight):
    return [None if l is None else float(len(c) * w + (c == l)) for c, l, w in zip(completions, label, weight)]


@pytest.fixture
def serve():
    servers = []

    def start(fn, **kw):
        server = RewardServer(fn, **kw)
        port = server.start_in_thread()
        servers.append(server)
        return server, f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, body: bytes):
    req = urllib.request.Request(url + "/score", data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_round_trip_equals_direct_call_with_none_and_columns(serve):
    server, url = serve(length_with_label)
    prompts = ["p1", "p2", "p3", "p4"]
    completions = ["ab", "abc", "", "x"]
    columns = {"label": ["ab", None, "", "y"], "weight": [1, 0.5, 2, 3]}
    remote = RemoteRewardFunction(url)
    assert remote(prompts, completions, **columns) == length_with_label(prompts, completions, **columns)
    assert remote(prompts, completions, **columns)[1] is None
    # Through score_completions, as the loop calls it: None -> NaN, same as the local function.
    local = score_completions(length_with_label, prompts, completions, columns)
    got = score_completions(remote, prompts, completions, columns)
    assert [x for x in got if x == x] == [x for x in local if x == x] and got[1] != got[1]
    assert remote([], []) == [] and server.requests == 2 + 1  # the empty batch sends nothing
    assert remote_reward(url + "/score")(["p"], ["abc"], label=["abc"], weight=[1]) == [4.0]


def test_spec_string_and_env_function(serve, tmp_path, monkeypatch):
    path = tmp_path / "r.py"
    path.write_text("def reward_func(prompts, completions, **kw):\n    return [float(len(c)) for c in completions]\n")
    _, url = serve(str(path))
    monkeypatch.setenv("REINFORCEPP_REWARD_URL", url)
    assert reward_from_env(["p", "q"], ["a", "bcd"]) == [1.0, 3.0]
    monkeypatch.delenv("REINFORCEPP_REWARD_URL")
    with pytest.raises(RewardError, match="REINFORCEPP_REWARD_URL"):
        reward_from_env(["p"], ["a"])


def test_batches_are_split(serve):
    sizes = []

    def fn(prompts, completions, idx):
        sizes.append(len(completions))
        return [float(i) for i in idx]

    server, url = serve(fn)
    n = 10
    out = RemoteRewardFunction(url, batch_size=4)(["p"] * n, ["c"] * n, idx=list(range(n)))
    assert out == [float(i) for i in range(n)]
    assert server.requests == 3 and sizes == [4, 4, 2]


def test_a_raising_function_surfaces_the_server_message_without_retry(serve):
    def fn(prompts, completions, **kw):
        if "boom" in completions:
            raise ValueError("cannot grade this")
        return [1.0] * len(completions)

    server, url = serve(fn)
    remote = RemoteRewardFunction(url, batch_size=2, retries=3, backoff=5.0)  # a retry would take seconds
    start = time.monotonic()
    with pytest.raises(RewardError) as info:
        remote(["a", "b", "c"], ["ok", "ok", "boom"])
    message = str(info.value)
    assert "samples 2..2" in message and "sample 0" in message and "'boom'" in message and "cannot grade this" in message
    assert server.requests == 2 and time.monotonic() - start < 2


def test_a_server_that_is_down_fails_clearly_after_the_retries():
    port = _free_port()
    remote = RemoteRewardFunction(f"http://127.0.0.1:{port}", retries=2, backoff=0.01, timeout=2)
    with pytest.raises(RewardError, match=rf"no reward server at http://127.0.0.1:{port}/score after 3 tries: connection refused"):
        remote(["p"], ["c"])


def test_a_slow_server_hits_the_client_timeout(serve):
    release = threading.Event()

    def slow(prompts, completions, **kw):
        release.wait(5)
        return [0.0] * len(completions)

    server, url = serve(slow)
    try:
        start = time.monotonic()
        with pytest.raises(RewardError, match=r"timed out on samples 0..0 after 2 tries: no answer within 0.2 s"):
            RemoteRewardFunction(url, timeout=0.2, retries=1, backoff=0.01)(["p"], ["c"])
        assert time.monotonic() - start < 2 and server.requests == 2
    finally:
        release.set()


def test_bad_requests_get_400_and_health_works(serve):
    _, url = serve(length_with_label)
    status, body = _post(url, b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]
    status, body = _post(url, json.dumps({"prompts": ["a"], "completions": ["x", "y"]}).encode())
    assert status == 400 and "1 prompts but 2 completions" in body["error"]
    status, body = _post(url, json.dumps({"prompts": ["a"], "completions": ["x"], "columns": {"label": []}}).encode())
    assert status == 400 and "column 'label'" in body["error"]
    with urllib.request.urlopen(url + "/health", timeout=5) as r:
        assert r.status == 200 and json.loads(r.read()) == {"status": "ok"}
    with pytest.raises(RewardError, match=r"rejected the request .*HTTP 404"):
        RemoteRewardFunction(url + "/nope")(["p"], ["c"])


def test_unserializable_columns_and_bad_urls_are_clear():
    with pytest.raises(RewardError, match="must be http"):
        RemoteRewardFunction("ftp://127.0.0.1:1")
    remote = RemoteRewardFunction(f"http://127.0.0.1:{_free_port()}", retries=0)
    with pytest.raises(RewardError, match="cannot send samples 0..0 as JSON"):
        remote(["p"], ["c"], obj=[object()])


def test_cli_serves_and_prints_its_url(capsys):
    assert serve_main(["--function", "no/such/file.py"]) == 2
    assert "file not found" in capsys.readouterr().err
    proc = subprocess.Popen(
        [sys.executable, "-m", "reinforcepp.rewards.serve", "--function", "reinforcepp.rewards.toy:target_char_share", "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "serving reward" in line and "http://127.0.0.1:" in line
        url = line.split(" on ", 1)[1].split()[0]
        assert RemoteRewardFunction(url)(["p"], ["aab"]) == [2 / 3]
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_a_url_spec_loads_a_remote_reward_and_the_cli_has_the_command():
    from reinforcepp.cli import main
    from reinforcepp.rewards import load_reward_function
    from reinforcepp.rewards.remote import RemoteRewardFunction

    assert isinstance(load_reward_function("http://127.0.0.1:9/score"), RemoteRewardFunction)
    with pytest.raises(SystemExit):  # argparse: --function is required
        main(["serve-reward"])


# --- bounds, lengths and the bearer token (the load and abuse figures: tests/reliability) ----------------

TOKEN = "t0ken-for-the-tests-" + "x" * 8


def test_heads_and_lengths_are_parsed_strictly():
    head = parse_head(b"POST /score/?a=1 HTTP/1.1\r\nContent-Length: 12\r\nX-A: 1\r\nx-a: 2\r\n\r\n")
    assert (head.method, head.path, head.keep_alive) == ("POST", "/score", True)
    assert head.headers == {"content-length": "12", "x-a": "1, 2"}
    assert not parse_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive
    assert not parse_head(b"GET / HTTP/1.0\r\n\r\n").keep_alive
    for raw in (b"GET /\r\n\r\n", b"GET / SPDY/3\r\n\r\n", b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
                b"GET / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n", b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"):
        with pytest.raises(HttpError) as info:
            parse_head(raw)
        assert info.value.status == 400
    assert body_length({"content-length": "12"}, 12, required=True) == 12
    assert body_length({}, 12, required=False) == 0
    for headers, status in (({}, 411), ({"transfer-encoding": "chunked"}, 411), ({"content-length": "-1"}, 400),
                            ({"content-length": " "}, 400), ({"content-length": "13"}, 413)):
        with pytest.raises(HttpError) as info:
            body_length(headers, 12, required=True)
        assert info.value.status == status


def test_the_token_check_and_what_counts_as_loopback():
    assert token_matches({"authorization": f"Bearer {TOKEN}"}, TOKEN)
    assert token_matches({"authorization": f"bearer  {TOKEN} "}, TOKEN)
    for value in ("", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"):
        assert not token_matches({"authorization": value}, TOKEN)
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "localhost", "::1"))
    assert not any(is_loopback(h) for h in ("", "0.0.0.0", "::", "192.0.2.1", "no-such-host.invalid"))
    with pytest.raises(RewardError, match="at least 16"):
        RewardServer(length_with_label, token="short")
    with pytest.raises(RewardError, match="needs a bearer token"):  # refused before anything is bound
        RewardServer(length_with_label).start_in_thread(host="0.0.0.0")


def test_a_served_token_is_checked_and_the_client_sends_it(serve, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    server, url = serve(length_with_label, token=TOKEN)
    kw = {"label": ["ab"], "weight": [1]}
    assert RemoteRewardFunction(url, token=TOKEN)(["p"], ["ab"], **kw) == [3.0]
    with pytest.raises(RewardError, match=rf"HTTP 401\): missing or wrong bearer token \(the client sends \${TOKEN_ENV}"):
        RemoteRewardFunction(url, retries=3)(["p"], ["ab"], **kw)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert RemoteRewardFunction(url)(["p"], ["ab"], **kw) == [3.0] and TOKEN not in repr(RemoteRewardFunction(url))
    assert server.requests == 2  # the refused request was never read
    monkeypatch.setenv(TOKEN_ENV, TOKEN + "\n")  # would break the header: refused without echoing it
    with pytest.raises(RewardError, match="without spaces") as info:
        RemoteRewardFunction(url)
    assert TOKEN not in str(info.value)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url + "/health", timeout=5)
    assert info.value.code == 401


def test_keep_alive_expect_continue_and_wrong_methods(serve):
    _, url = serve(length_with_label)
    port = int(url.rsplit(":", 1)[1])
    body = json.dumps({"prompts": ["p"], "completions": ["ab"], "columns": {"label": ["ab"], "weight": [2]}}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for _ in range(2):  # one connection, two requests
        connection.request("POST", "/score", body)
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read()) == {"rewards": [5.0]}
    connection.request("GET", "/score")
    response = connection.getresponse()
    assert response.status == 405 and "use POST /score, GET /health" in json.loads(response.read())["error"]
    connection.close()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"POST /score HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert b"200 OK" in sock.recv(1000)


def test_a_busy_server_answers_503_and_the_client_tries_again(serve):
    release = threading.Event()

    def slow(prompts, completions, **kw):
        release.wait(5)
        return [1.0] * len(completions)

    server, url = serve(slow, limits=Limits(max_body_bytes=200, max_buffered_bytes=200))
    first = threading.Thread(target=RemoteRewardFunction(url, retries=0), args=(["p"], ["a" * 100]))
    first.start()  # holds more than half of the 200 bytes until released
    deadline = time.monotonic() + 5
    while server.requests == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(RewardError, match=r"after 1 tries: HTTP 503 server busy"):
        RemoteRewardFunction(url, retries=0)(["p"], ["b" * 100])
    threading.Timer(0.2, release.set).start()
    assert RemoteRewardFunction(url, retries=3, backoff=0.2)(["p"], ["b" * 100]) == [1.0]
    first.join(5)


def test_the_cli_refuses_bad_tokens_and_limits_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    spec = "reinforcepp.rewards.toy:target_char_share"
    for argv, says in ((["--token-file", str(tmp_path / "missing")], "--token-file: cannot read"),
                       (["--token-file", str(empty)], "is empty"),
                       (["--host", "0.0.0.0"], "needs a bearer token"),
                       (["--max-body-mb", "8", "--max-buffered-mb", "4"], "--max-buffered-mb (4) must be at least")):
        assert serve_main(["--function", spec, "--port", "0", *argv]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    with pytest.raises(SystemExit):
        serve_main(["--function", spec, "--idle-timeout", "0"])


def test_a_body_over_the_cap_is_a_clear_413_for_a_client_that_sends_it_whole(serve):
    _, url = serve(length_with_label, limits=Limits(max_body_bytes=MiB, max_buffered_bytes=MiB))
    big = "a" * (3 * MiB)  # urllib sends the whole body before it reads: the server drops it, then answers
    with pytest.raises(RewardError, match=rf"HTTP 413\): request body of \d+ bytes exceeds the limit of {MiB} bytes"):
        RemoteRewardFunction(url, retries=0)(["p"], [big], label=["x"], weight=[1])
