"""The sweep's MLflow callback survives a tracking-server outage without losing a metric.

A real `mlflow server` (started with `sepconc.tracking.server`) is stopped between two
epochs of a trial and started again on the same port and store; the callback buffers
the operations of the outage in order and sends them when the server answers. The
trial objects are plain records carrying what Tune's `Trial` exposes to callbacks
(`trial_id`, `config`); no Ray is started.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from sepconc.sweep.callbacks import MlflowSweepCallback
from sepconc.tracking.server import ServerOptions, start_server, stop_server, tracking_uri
from sepconc.tracking.store import TAG_STATUS, experiment_id, open_client

pytestmark = pytest.mark.timeout(300)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_outage_buffers_then_sends_every_metric(tmp_path: Path):
    opts = ServerOptions(port=free_port(), runs_dir=tmp_path / "runs")
    server = start_server(opts)
    try:
        uri = tracking_uri(opts)
        client = open_client(uri)
        exp = experiment_id(client, "outage", None)
        parent = client.create_run(exp, run_name="outage").info.run_id
        callback = MlflowSweepCallback(uri, exp, parent, "outage", {"epochs": 4}, 4,
                                       {"type": "fifo"})  # fmt: skip
        callback.retry_every_s = 0.2
        trial = SimpleNamespace(trial_id="t0001", config={"params": {"lr": 0.1}})
        callback.on_trial_start(0, [], trial)
        callback.on_trial_result(0, [], trial, {"epoch": 1, "val_acc1": 10.0})
        assert not callback._pending

        stop_server(server)  # the outage: epochs 2 and 3 and the completion happen now
        for epoch in (2, 3, 4):
            callback.on_trial_result(0, [], trial, {"epoch": epoch, "val_acc1": 10.0 * epoch})
        callback.on_trial_complete(0, [], trial)
        assert len(callback._pending) == 4, "the outage's operations wait in order"

        server = start_server(opts)  # same port, same store
        time.sleep(0.3)
        callback.on_step_end(0, [])
        assert not callback._pending, "everything buffered was sent once the server answered"
        run = client.search_runs([exp], filter_string="tags.`sepconc.trial_id` = 't0001'")
        assert len(run) == 1
        history = client.get_metric_history(run[0].info.run_id, "val_acc1")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
            (1, 10.0), (2, 20.0), (3, 30.0), (4, 40.0)]  # fmt: skip
        assert run[0].data.tags[TAG_STATUS] == "completed"
        assert run[0].info.status == "FINISHED"
    finally:
        stop_server(server)
