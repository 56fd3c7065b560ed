"""`launch.py mlflow-server` as a real process: log and read back a run, Host check, auth, stop.

Every server runs on a free loopback port in a temporary runs folder and is stopped by
the test that started it (SIGTERM to the launch.py process, which ends the server's own
process group); the tests then check no descendant process survived.
"""

from __future__ import annotations

import base64
import importlib.util
import itertools
import os
import selectors
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import launch, start

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(240)  # last resort; each step has its own deadline
START_TIMEOUT_S = 90
PASSWORD = "s3parati0n-test-only"  # throwaway password of a throwaway test server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every live descendant of `pid`, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SEPCONC_"))}
    e.update(MLFLOW_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1", **extra)
    return e


class Server:
    """`launch.py mlflow-server` started as a child; `uri` once it printed its URI."""

    def __init__(self, runs: Path, *args: str, **extra_env: str) -> None:
        self.port = free_port()
        self.proc = start(
            "mlflow-server",
            "--port",
            self.port,
            "--runs-dir",
            runs,
            *args,
            cwd=REPO,
            env=env(**extra_env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.uri = self._read_uri()
        self.children = descendants(self.proc.pid)

    def _read_uri(self) -> str:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if sel.select(timeout=1):
                line = self.proc.stdout.readline()
                if line.startswith("tracking URI: "):
                    return line.split(": ", 1)[1].strip()
                if not line and self.proc.poll() is not None:
                    break
        self.stop()
        pytest.fail(f"no tracking URI printed; stderr: {self.proc.stderr.read()[-2000:]}")

    def stop(self) -> float:
        """SIGTERM, wait; return the seconds it took (killing it if it hangs)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                for pid in descendants(self.proc.pid) | {self.proc.pid}:
                    os.kill(pid, signal.SIGKILL)
                self.proc.wait(5)
        elapsed = time.monotonic() - t0
        deadline = time.monotonic() + 5
        while any(alive(p) for p in self.children) and time.monotonic() < deadline:
            time.sleep(0.1)
        return elapsed


def http_status(url: str, host: str | None = None, user: str | None = None, pw: str = "") -> int:
    req = urllib.request.Request(url)
    if host:
        req.add_header("Host", host)
    if user:
        req.add_header(
            "Authorization", "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
        )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(autouse=True)
def _linux_only():
    if not Path("/proc/self/stat").exists():
        pytest.skip("process checks read /proc")


def test_server_logs_runs_refuses_foreign_host_and_stops_cleanly(tmp_path):
    import mlflow

    runs = tmp_path / "runs"
    server = Server(runs)
    try:
        assert server.uri == f"http://127.0.0.1:{server.port}"
        assert server.children, "the server runs as a child process"
        client = mlflow.MlflowClient(tracking_uri=server.uri)
        exp = client.create_experiment("server-test")
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "val_acc1", 0.75, step=3)
        client.log_text(run.info.run_id, "hello", "note.txt")
        got = client.get_run(run.info.run_id)
        assert got.data.metrics == {"val_acc1": 0.75}
        history = client.get_metric_history(run.info.run_id, "val_acc1")
        assert [(m.step, m.value) for m in history] == [(3, 0.75)]
        # Artifacts travel through the server into the runs folder (no shared disk needed).
        assert got.info.artifact_uri.startswith("mlflow-artifacts:")
        assert [p.read_text() for p in (runs / "mlflow-artifacts").rglob("note.txt")] == ["hello"]
        assert (runs / "mlflow.db").is_file()

        api = f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=1"
        assert http_status(api) == 200
        assert 400 <= http_status(api, host="evil.example.com") < 500
        assert 400 <= http_status(api, host=f"evil.example.com:{server.port}") < 500
    finally:
        elapsed = server.stop()
    assert server.proc.returncode == 0
    assert elapsed < 15
    assert not [p for p in server.children if alive(p)], "server processes outlived the command"
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", server.port))


def test_port_in_use_is_a_one_line_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = launch("mlflow-server", "--port", port, "--runs-dir", tmp_path / "runs",
                      cwd=REPO, env=env(), timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and str(port) in done.stderr and "--port" in done.stderr
    assert "tracking URI" not in done.stdout


def test_auth_without_password_is_a_one_line_error(tmp_path):
    done = launch("mlflow-server", "--auth", "--port", free_port(), "--runs-dir",
                  tmp_path / "runs", cwd=REPO, env=env(), timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "SEPCONC_MLFLOW_ADMIN_PASSWORD" in done.stderr
    assert not (tmp_path / "runs").exists(), "nothing is started or written"


@pytest.mark.skipif(
    importlib.util.find_spec("flask_wtf") is None,
    reason="mlflow[auth] extra (Flask-WTF) not installed",
)
def test_basic_auth_requires_the_admin_credentials(tmp_path):
    runs = tmp_path / "runs"
    server = Server(runs, "--auth", SEPCONC_MLFLOW_ADMIN_PASSWORD=PASSWORD)
    try:
        api = f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=1"
        assert http_status(api) == 401
        assert http_status(api, user="admin", pw="wrong") == 401
        assert http_status(api, user="admin", pw=PASSWORD) == 200
        ini = runs / "mlflow-auth" / "basic_auth.ini"
        assert ini.stat().st_mode & 0o777 == 0o600
        assert PASSWORD not in ini.read_text()
        assert "auth_cache_ttl_seconds = 60" in ini.read_text()
    finally:
        server.stop()
    assert server.proc.returncode == 0
    assert not [p for p in server.children if alive(p)]


def test_server_command_has_the_safe_defaults(tmp_path):
    from sepconc.tracking.server import ServerOptions, build_command

    runs = (tmp_path / "runs").resolve()
    cmd, extra_env = build_command(ServerOptions(port=5123, runs_dir=runs))
    arg = dict(itertools.pairwise(cmd))
    assert arg["--host"] == "127.0.0.1" and arg["--workers"] == "1"
    assert arg["--backend-store-uri"] == f"sqlite:///{runs / 'mlflow.db'}"
    assert arg["--artifacts-destination"] == str(runs / "mlflow-artifacts")
    assert "--serve-artifacts" in cmd and "--app-name" not in cmd
    assert extra_env == {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    hosts = arg["--allowed-hosts"].split(",")
    assert {"127.0.0.1:5123", "localhost:5123"} <= set(hosts)
    assert not [h for h in hosts if "*" in h or h.startswith(("10.", "172.", "192.168."))]

    opts = ServerOptions(
        host="0.0.0.0", port=5123, runs_dir=runs, allowed_hosts=["mlflow.example.org"],
        auth=True, admin_password=PASSWORD,
    )  # fmt: skip
    cmd, extra_env = build_command(opts)
    arg = dict(itertools.pairwise(cmd))
    assert arg["--app-name"] == "basic-auth"
    assert {"mlflow.example.org", "mlflow.example.org:5123", "localhost"} <= set(
        arg["--allowed-hosts"].split(",")
    )
    assert extra_env["MLFLOW_AUTH_ADMIN_PASSWORD"] == PASSWORD
    assert extra_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert len(extra_env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) >= 32
    assert PASSWORD not in " ".join(cmd) and PASSWORD not in repr(opts)
