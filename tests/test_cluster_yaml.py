"""`cluster.yaml` and `cluster-local.yaml` pass Ray's own launcher validation, offline.

`ray up` runs `prepare_config` (merge the provider's defaults, fill node-type worker
counts) and `validate_config` (Ray's JSON schema plus consistency checks) before it
contacts any provider; the tests run exactly those, so no cloud credentials are needed.
They also pin the security-relevant choices: loopback dashboard, token auth on every
Ray process, and no secret-looking values in the files.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FILES = ["cluster.yaml", "cluster-local.yaml"]


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def ray_up_checks(config: dict) -> dict:
    """What `ray up` does to a config before it talks to a provider; returns the result."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.mark.parametrize("name", FILES)
def test_ray_launcher_accepts_the_file(name):
    prepared = ray_up_checks(load(name))
    assert prepared["head_node_type"] in prepared["available_node_types"]
    assert prepared["file_mounts"]["~/sepconc"] == "."


def test_aws_cluster_has_an_autoscaling_gpu_worker_type():
    prepared = ray_up_checks(load("cluster.yaml"))
    assert prepared["provider"]["type"] == "aws"
    workers = {k: v for k, v in prepared["available_node_types"].items() if k != "head"}
    gpu = [v for v in workers.values() if v["resources"].get("GPU", 0) >= 1]
    assert gpu, "no GPU worker node type"
    assert all(v["min_workers"] == 0 < v["max_workers"] <= prepared["max_workers"] for v in gpu)
    head = prepared["available_node_types"]["head"]
    assert "GPU" not in head["resources"] and head["max_workers"] == 0
    setup = " ".join(prepared["worker_setup_commands"])
    assert 'pip install -e "$HOME/sepconc[skcuda]"' in setup


def test_local_cluster_uses_the_local_provider():
    config = load("cluster-local.yaml")
    assert config["provider"]["type"] == "local"
    assert config["provider"]["head_ip"] and config["provider"]["worker_ips"]
    prepared = ray_up_checks(config)
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["max_workers"] == len(config["provider"]["worker_ips"])


def _rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


@pytest.mark.parametrize(
    ("where", "old", "new"),
    [
        ((), "max_workers", "max_worker"),
        ((), "head_node_type", "head_node_typ"),
        ((), "setup_commands", "setup_command"),
        (("available_node_types", "gpu_worker"), "min_workers", "min_worker"),
        (("available_node_types", "gpu_worker"), "resources", "resource"),
    ],
)
def test_a_typo_in_a_key_is_refused(where, old, new):
    import jsonschema

    config = load("cluster.yaml")
    target = config
    for key in where:
        target = target[key]
    _rename(target, old, new)
    with pytest.raises((jsonschema.ValidationError, ValueError)) as info:
        ray_up_checks(config)
    assert new in str(info.value) or old in str(info.value)


def _start_commands(config: dict) -> list[str]:
    return config["head_start_ray_commands"] + config["worker_start_ray_commands"]


@pytest.mark.parametrize("name", FILES)
def test_dashboard_on_loopback_and_token_auth_everywhere(name):
    prepared = ray_up_checks(load(name))
    (head_start,) = [c for c in prepared["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in " ".join(_start_commands(prepared))
    for cmd in _start_commands(prepared):
        if "ray start" in cmd:
            assert "RAY_AUTH_MODE=token ray start" in cmd
    # Shells that `ray exec` / `ray attach` open (and job drivers) get token mode too.
    assert any("export RAY_AUTH_MODE=token" in c for c in prepared["setup_commands"])
    # The token travels from the user's machine by file, never inline.
    assert prepared["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


SECRET_PATTERNS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key id
    re.compile(r"(?i)aws_(secret_access_key|access_key_id|session_token)"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\b[0-9a-fA-F]{32,}\b"),  # hex tokens (Ray's auth token, API keys)
    re.compile(r"(?i)RAY_AUTH_TOKEN\s*="),
    re.compile(r"(?i)MLFLOW_TRACKING_PASSWORD\s*="),
]
_SECRET_KEY = re.compile(r"(?i)\b[\w.-]*(password|passwd|secret|token)[\w.-]*\s*[:=]\s*(\S+)")


@pytest.mark.parametrize("name", FILES)
def test_no_secrets_in_the_file(name):
    text = (REPO / name).read_text()
    for pattern in SECRET_PATTERNS:
        assert not pattern.search(text), f"{name}: secret-looking text {pattern.pattern}"
    for match in _SECRET_KEY.finditer(text):
        value = match.group(2).strip("'\"")
        assert value.startswith(("~", "/", "$")), f"{name}: {match.group(0)!r} holds a value"
