"""A sweep on a real two-node Ray cluster on loopback, logging to a real MLflow server.

The head node (`ray start --head --node-ip-address 127.0.0.1`: Ray records it under the
machine's own address) and a second node on `127.0.0.2` each offer 2 CPUs; a trial's two
DDP workers each ask for 2 CPUs, so every trial spans both nodes. The driver joins with
`launch.py sweep --address` (token auth, as Ray sets it up by default) and logs to a
`launch.py mlflow-server`-style server on loopback; sweep state and checkpoints live on a
shared path outside the runs folder (node-local storage is refused on a multi-node cluster).

Proves: every trial finished with its per-epoch metrics in MLflow, and each trial's
`sepconc.nodes` tag names both nodes (its workers really ran on two nodes, DDP across
them); and that the test leaves no process of its own behind (both nodes run
`ray start --block` in their own process groups and are stopped through them, never
with `ray stop`, which would stop every Ray of the user).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.helpers import launch
from tests.proctree import alive, descendants, kill_all

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
LRS = [0.01, 0.001]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ray_env(token: Path) -> dict[str, str]:
    """Token auth on, with the test's own token file: a fresh machine has no
    `~/.ray/auth_token`, and `ray start` never creates one (a real cluster ships it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
               RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1",
               RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="180", PYTHONUNBUFFERED="1")  # fmt: skip
    return env


def node_flags(ip: str) -> list[str]:
    """Every port a node opens chosen free (two nodes share this machine's ports)."""
    ports = ("--node-manager-port", "--object-manager-port", "--metrics-export-port",
             "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
             "--runtime-env-agent-port")  # fmt: skip
    flags = ["--node-ip-address", ip, "--num-cpus", "2", "--block", "--disable-usage-stats",
             "--log-color", "false",
             "--object-store-memory", str(200 * 2**20)]  # fmt: skip
    for flag in ports:
        flags += [flag, str(free_port())]
    return flags


def forget_cluster(port: int) -> None:
    """Remove Ray's note of "the last `ray start` cluster" if it names ours: a bare
    `ray.init()` elsewhere would otherwise try to join it after it ended."""
    note = Path("/tmp/ray/ray_current_cluster")
    try:
        if note.read_text().strip().endswith(f":{port}"):
            note.unlink()
    except OSError:
        pass


class Node:
    """`ray start ... --block` in its own process group; its output in `log`."""

    def __init__(self, log: Path, token: Path, *args: str):
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen([RAY, "start", *args], env=ray_env(token), stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.procs: dict[int, str] = {}

    def wait_started(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text()
            assert self.proc.poll() is None, text[-3000:]
            if "Ray runtime started" in text:
                return text
            time.sleep(0.5)
        raise AssertionError(f"ray start did not start in {timeout} s:\n{text[-3000:]}")

    def remember(self) -> None:
        self.procs.update(descendants(self.proc.pid))

    def stop(self) -> None:
        self.remember()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def test_two_node_sweep_spans_both_nodes_and_logs_to_server(tmp_path):
    from mlflow.tracking import MlflowClient

    from sepconc.tracking.server import ServerOptions, start_server, stop_server

    spec = {
        "name": "two-node",
        "base": {"dataset": "synthetic", "arch": "analysis", "frame_width": [16],
                 "frame_kernel_size": [4], "frame_stride": [4], "epochs": 2, "batch_size": 100,
                 "learning_rate_adjust_frequency": 2, "workers": 0, "seed": 0, "device": "cpu",
                 "stats_every": 1, "stats_probe_size": 100},
        "search": {"lr": {"grid": LRS}},
        "scheduler": {"type": "fifo"},
        "resources": {"workers_per_trial": 2, "cpus_per_worker": 2, "max_concurrent_trials": 1},
        "storage": str(tmp_path / "shared"),
    }  # fmt: skip
    sweep = tmp_path / "two-node.yaml"
    sweep.write_text(yaml.safe_dump(spec, sort_keys=False))

    token = tmp_path / "auth_token"
    token.write_text(uuid.uuid4().hex)
    token.chmod(0o600)
    gcs = free_port()
    nodes: list[Node] = []
    server = None
    try:
        opts = ServerOptions(host="127.0.0.1", port=free_port(), runs_dir=tmp_path / "mlflow")
        server = start_server(opts)
        uri = f"http://127.0.0.1:{opts.port}"
        head = Node(tmp_path / "head.log", token, "--head", "--port", str(gcs),
                    "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                    "--dashboard-port", str(free_port()),
                    "--ray-client-server-port", str(free_port()), *node_flags("127.0.0.1"))  # fmt: skip
        nodes.append(head)
        started = re.sub(r"\x1b\[[0-9;]*m", "", head.wait_started())
        head_ip = re.search(r"Local node IP: ([\d.]+)", started).group(1)
        second = Node(tmp_path / "node2.log", token, "--address", f"127.0.0.1:{gcs}",
                      *node_flags("127.0.0.2"))  # fmt: skip
        nodes.append(second)
        second.wait_started()
        assert head_ip != "127.0.0.2"

        # A driver whose token does not match is refused in one line, before any trial.
        wrong = tmp_path / "wrong_token"
        wrong.write_text(uuid.uuid4().hex)
        proc = launch("sweep", sweep, "--address", f"127.0.0.1:{gcs}", "--tracking-uri", uri,
                      "--runs-dir", tmp_path / "refused", env=ray_env(wrong), timeout=120)  # fmt: skip
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-4000:]
        assert "auth token" in proc.stderr and "RAY_AUTH_TOKEN_PATH" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and "gcs_client" not in proc.stderr, proc.stderr

        proc = launch("sweep", sweep, "--address", f"127.0.0.1:{gcs}", "--tracking-uri", uri,
                      "--runs-dir", tmp_path / "runs", env=ray_env(token), timeout=400)  # fmt: skip
        for node in nodes:
            node.remember()  # the workers the raylets started, while they still run
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("two-node")
        runs = client.search_runs(
            [exp.experiment_id], filter_string="tags.`sepconc.kind` = 'trial'"
        )
        assert len(runs) == len(LRS)
        for run in runs:
            assert run.info.status == "FINISHED"
            assert run.data.tags["sepconc.status"] == "completed"
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc1")]
            assert steps == [1, 2]
            assert run.data.metrics["val_acc1"] > 0
            ips = run.data.tags["sepconc.nodes"].split(",")
            assert sorted(ips) == sorted([head_ip, "127.0.0.2"]), ips
        assert (tmp_path / "shared" / "tune" / "two-node").is_dir()
        assert not (tmp_path / "runs" / "tune").exists()  # state went to the shared storage
    finally:
        for node in reversed(nodes):
            node.stop()
        if server is not None:
            stop_server(server)
        forget_cluster(gcs)
        ours = {pid: start for node in nodes for pid, start in node.procs.items()}
        deadline = time.monotonic() + 20
        while alive(ours) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = alive(ours)
        if left:
            kill_all(ours)
    assert not left, f"processes of the test's Ray nodes still running after stop: {left}"
