"""Remote rewards over loopback HTTP: RewardServer <-> RemoteRewardFunction."""

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
from reinforcepp.rewards.remote import RemoteRewardFunction, RewardServer, remote_reward, reward_from_env
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
