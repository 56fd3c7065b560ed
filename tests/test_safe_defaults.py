"""Safe defaults, checked in the source and by behaviour (no network, no Ray, no subprocess).

- YAML: only the safe loader (no `yaml.load(`, `unsafe_load`, `Loader`, `FullLoader`; every
  read and write through `sepconc.yamlio`, a `SafeLoader` subclass), and a
  sweep or config file carrying a `!!python/object/apply` payload is refused without running it.
- Checkpoints: every `torch.load(` passes `weights_only=True`; a checkpoint holding a pickled
  object (a custom class, an `os.system` reduce payload) is refused by `load_checkpoint` with a
  `CheckpointError` and the payload never runs. `pickle.load` only for the CIFAR batch format.
- Listening sockets: `mlflow-server` binds 127.0.0.1 by default; the cluster configs and the
  embedded Ray keep the dashboard on loopback.
- No secret-looking strings (AWS keys, secret keys, passwords) in tracked files.
- Sweep and run names used in paths are sanitized.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from sepconc.checkpoint import CheckpointError, load_checkpoint
from sepconc.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "sepconc").rglob("*.py")) + [ROOT / "launch.py"]


def _code(path: Path) -> str:
    """The file's text without comments (a comment may mention what the code must not do)."""
    return "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())


def _calls(text: str, name: str) -> list[str]:
    """The argument text of every `name(` call in `text` (balanced parentheses)."""
    found = []
    for match in re.finditer(re.escape(name) + r"\(", text):
        depth, i = 1, match.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        found.append(text[match.end() : i - 1])
    return found


# ------------------------------------------------------------------ YAML


@pytest.mark.parametrize(
    "pattern", [r"yaml\.load\(", r"unsafe_load", r"yaml\.Loader\b", r"FullLoader", r"UnsafeLoader"]
)
def test_only_the_safe_yaml_loader(pattern):
    offenders = [str(p.relative_to(ROOT)) for p in SOURCES if re.search(pattern, _code(p))]
    assert not offenders, f"{pattern} in {offenders}"
    assert any("load_yaml(" in _code(p) for p in SOURCES)  # the scan does see YAML use


def test_one_yaml_reader_and_writer():
    """Every YAML read and write goes through `sepconc.yamlio`, whose loader is safe."""
    from sepconc import yamlio

    assert issubclass(yamlio.Loader, yaml.SafeLoader)
    assert issubclass(yamlio.Dumper, yaml.SafeDumper)
    calls = r"yaml\.(safe_load|safe_dump|load|dump|full_load|load_all|safe_load_all)\("
    offenders = [str(p.relative_to(ROOT)) for p in SOURCES
                 if p.name != "yamlio.py" and re.search(calls, _code(p))]  # fmt: skip
    assert not offenders, offenders


# A YAML payload (`!!python/object/apply:os.system`) in a sweep or config file is a case of
# the bad-input catalogue (tests/test_bad_input.py): refused, and the command never runs.


# ------------------------------------------------------------------ checkpoints and pickles


def test_every_torch_load_is_weights_only():
    calls = {str(p.relative_to(ROOT)): _calls(_code(p), "torch.load") for p in SOURCES}
    calls = {path: found for path, found in calls.items() if found}
    assert calls, "no torch.load found: the scan is broken"
    for path, found in calls.items():
        for args in found:
            assert re.search(r"\bweights_only\s*=\s*True\b", args), (path, args)


def test_pickle_and_numpy_loads_are_confined():
    """`pickle.load` only reads CIFAR's own batch format; numpy never unpickles."""
    for path in SOURCES:
        code, rel = _code(path), str(path.relative_to(ROOT))
        if re.search(r"\bpickle\.loads?\(|\bdill\.|\bcloudpickle\.load", code):
            assert rel == "sepconc/data/torchvision_sets.py", rel
        # numpy's default is allow_pickle=False (since 1.16.3): it must never be turned on
        assert not re.search(r"allow_pickle\s*=\s*True", code), rel


class Payload:
    """Unpickling this runs `touch MARKER`: a checkpoint must never be able to do that."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Custom:
    """A harmless custom class: still not allowed in a weights-only checkpoint."""

    def __init__(self):
        self.value = 3


@pytest.mark.parametrize("kind", ["os_system_reduce", "custom_class"])
def test_checkpoint_with_pickled_object_is_refused(tmp_path, kind):
    marker = tmp_path / "pwned"
    evil = Payload(marker) if kind == "os_system_reduce" else Custom()
    path = tmp_path / "epoch_0001.pt"
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 1, "extra": evil}, path)
    expect = (r"epoch_0001\.pt holds a call to posix\.system, which the safe loader refuses because"
              if kind == "os_system_reduce" else
              r"epoch_0001\.pt is intact but holds objects the safe loader .* refuses: "
              r"tests\.test_safe_defaults\.Custom")  # fmt: skip
    with pytest.raises(CheckpointError, match=expect) as exc:
        load_checkpoint(path)
    assert "\n" not in str(exc.value) and "corrupt" not in str(exc.value)
    assert not marker.exists(), "the payload ran"


def test_plain_checkpoint_still_loads(tmp_path):
    path = tmp_path / "epoch_0001.pt"
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 1, "config": {"lr": 0.1}}, path)
    assert load_checkpoint(path)["config"] == {"lr": 0.1}


# ------------------------------------------------------------------ listening sockets


def test_mlflow_server_binds_loopback_by_default():
    from sepconc.cli import build_parser
    from sepconc.tracking.server import ServerOptions, build_command, is_loopback

    args = build_parser().parse_args(["mlflow-server"])
    assert args.host == "127.0.0.1" and not args.auth
    opts = ServerOptions()
    assert opts.host == "127.0.0.1" and is_loopback(opts.host) and not opts.auth
    cmd, env = build_command(opts)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--workers") + 1] == "1"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    hosts = cmd[cmd.index("--allowed-hosts") + 1].split(",")
    assert "*" not in hosts and not any(h.startswith(("0.0.0.0", "10.", "192.168.")) for h in hosts)
    assert not is_loopback("0.0.0.0")


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-local.yaml"])
def test_cluster_dashboard_on_loopback(name):
    path = ROOT / name
    if not path.exists():
        pytest.skip(f"no {name}")
    config = yaml.safe_load(path.read_text())
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head, head
    assert "0.0.0.0" not in path.read_text()
    assert "RAY_AUTH_MODE=token" in head


def test_embedded_ray_dashboard_on_loopback():
    """`start_ray` (not run here: no Ray in this file) asks for the dashboard on 127.0.0.1."""
    code = _code(ROOT / "sepconc" / "sweep" / "driver.py")
    inits = _calls(code, "ray.init")
    embedded = [args for args in inits if "address=address" not in args]  # not --address
    assert embedded, inits
    for args in embedded:
        assert re.search(r"dashboard_host\s*=\s*\"127\.0\.0\.1\"", args), args
    assert "0.0.0.0" not in code


# ------------------------------------------------------------------ secrets


SECRET_PATTERNS = {
    "aws access key id": re.compile(r"AKIA[0-9A-Z]{16}"),
    "aws secret": re.compile(r"aws_secret_access_key\s*[:=]\s*\S", re.IGNORECASE),
    "password literal": re.compile(r"password\s*[:=]\s*['\"][^'\"]+", re.IGNORECASE),
    "private key": re.compile(r"-----BEGIN (RSA |EC |OPENSSH )?PRIVATE KEY-----"),
}


# A throw-away password the basic-auth test starts a loopback server with (marked test-only).
ALLOWED = {("tests/test_tracking_server.py", 'PASSWORD = "s3parati0n-test-only')}


def test_no_secrets_in_tracked_files():
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = [ROOT / f for f in listed.split("\0") if f]
    assert len(files) > 10
    hits = []
    for path in files:
        try:
            text = path.read_bytes()[:2_000_000].decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # binary (npz, png) or deleted in the working tree
        for what, pattern in SECRET_PATTERNS.items():
            if path.name == "test_safe_defaults.py":
                continue  # the patterns themselves
            for match in pattern.finditer(text):
                rel = str(path.relative_to(ROOT))
                if (rel, match.group(0)) not in ALLOWED:
                    hits.append(f"{rel}: {what}: {match.group(0)[:40]}")
    assert not hits, hits


def test_secret_patterns_do_catch_secrets():
    # Assembled at run time so this file holds no secret-looking literal itself.
    key = "AKIA" + "ABCDEFGHIJKLMNOP"
    assert SECRET_PATTERNS["aws access key id"].search(f"id = {key}")
    assert SECRET_PATTERNS["aws secret"].search("aws_secret_access_key = abc")
    assert SECRET_PATTERNS["password literal"].search("password: " + '"hunter2"')
    assert not SECRET_PATTERNS["password literal"].search("password = os.environ.get(NAME)")


# ------------------------------------------------------------------ names used in paths


@pytest.mark.parametrize(
    "bad", ["../x", "a/b", ".hidden", "", "..", "x/../../y", "a\\b", "a" * 101]
)
def test_check_name_refuses_path_tricks(bad):
    from sepconc.sweep.spec import check_name

    with pytest.raises(UserError, match=r"is not allowed"):
        check_name(bad)


@pytest.mark.parametrize("good", ["quickstart", "relu-vs-soft_2", "v1.2", "A" * 100])
def test_check_name_accepts_plain_names(good):
    from sepconc.sweep.spec import check_name

    assert check_name(good) == good


def test_sweep_lookups_sanitize_the_name(tmp_path):
    from sepconc.sweep.driver import read_meta

    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "sweep.json").write_text("{}")
    with pytest.raises(UserError, match=r"is not allowed"):
        read_meta("../secret", tmp_path / "runs")
