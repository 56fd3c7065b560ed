"""An MLflow tracking server with safe defaults, started as a child process group.

`start_server(ServerOptions(...))` runs, in this order:

1. checks the port is free and, with `auth`, that the `mlflow[auth]` extra is importable;
2. creates or upgrades the backend store's schema (`mlflow db upgrade URI`) before anything
   serves, so concurrent first writers never race on a fresh sqlite file;
3. starts `mlflow server` with exactly one uvicorn worker (more workers hit a keep-alive
   latency bug: ~48 ms instead of ~6 ms per call), background job execution off, artifacts
   proxied through the server (`--serve-artifacts --artifacts-destination`, so Ray workers
   on other nodes need no shared disk), and MLflow's Host-header check limited to this
   host's names plus loopback (MLflow's own default also admits every private IP);
4. waits until `GET /health` answers 200 (with `auth`, until the admin credentials work).

The server runs in its own session (process group), with stdout and stderr appended to
`<runs>/mlflow-server.log`; `stop_server` ends the whole group (SIGTERM, then SIGKILL).

With `auth` the basic-auth app is used: its config file `<runs>/mlflow-auth/basic_auth.ini`
(mode 0600) names the admin user, its own sqlite user store and a 60 s credential cache
(password hashing otherwise costs ~147 ms per request instead of ~14 ms). The admin
password is handed to the child through its environment only and is never written to disk
by this module; MLflow stores only a salted hash of it in the user store, on first start.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from sepconc.errors import UserError
from sepconc.tracking.store import store_lock

log = logging.getLogger(__name__)

LOG_NAME = "mlflow-server.log"
AUTH_DIR = "mlflow-auth"
AUTH_CACHE_TTL_S = 60
_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_WILDCARDS = ("0.0.0.0", "::", "")


@dataclass
class ServerOptions:
    """What `start_server` needs; `None` fields take the defaults described below.

    backend_store_uri: default `sqlite:///<runs_dir>/mlflow.db` (absolute path).
    artifacts_destination: default `<runs_dir>/mlflow-artifacts`; a local path or a URI
        such as `s3://bucket/prefix`.
    allowed_hosts: Host header values the server accepts besides loopback
        (`localhost`, `127.0.0.1`, `[::1]`, with or without the port); default the bound
        host, or this machine's names and addresses when bound to a wildcard address.
    auth: use MLflow's basic-auth app; then `admin_password` is required.
    secret_key: Flask secret for the auth app's CSRF protection; default a random one per
        start (fine for one server process).
    """

    host: str = "127.0.0.1"
    port: int = 5000
    runs_dir: Path = Path("runs")
    backend_store_uri: str | None = None
    artifacts_destination: str | None = None
    allowed_hosts: list[str] | None = None
    auth: bool = False
    admin_username: str = "admin"
    admin_password: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    startup_timeout_s: float = 90.0

    def __post_init__(self) -> None:
        self.runs_dir = Path(self.runs_dir).resolve()
        if self.backend_store_uri is None:
            self.backend_store_uri = f"sqlite:///{self.runs_dir / 'mlflow.db'}"
        if self.artifacts_destination is None:
            self.artifacts_destination = str(self.runs_dir / "mlflow-artifacts")
        elif "://" not in self.artifacts_destination:
            self.artifacts_destination = str(Path(self.artifacts_destination).resolve())
        if not 0 < self.port < 65536:
            raise UserError(f"--port {self.port} is not a TCP port; use 1..65535")

    @property
    def log_path(self) -> Path:
        return self.runs_dir / LOG_NAME


def is_loopback(host: str) -> bool:
    """True when `host` (a name or an address) resolves only to loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def _outbound_address() -> str | None:
    """The address other machines most likely reach this one at (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            return s.getsockname()[0]
    except OSError:
        return None


def _machine_names() -> list[str]:
    names = [socket.gethostname(), socket.getfqdn()]
    try:
        names += socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        pass
    names.append(_outbound_address() or "")
    return [n for n in dict.fromkeys(names) if n]


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def client_host(opts: ServerOptions) -> str:
    """The host part of the URI clients should use (an address others can reach)."""
    if opts.host in _WILDCARDS:
        return _outbound_address() or socket.gethostname()
    return opts.host


def tracking_uri(opts: ServerOptions) -> str:
    """`http://HOST:PORT`, the value to pass to `--tracking-uri`."""
    return f"http://{_url_host(client_host(opts))}:{opts.port}"


def allowed_host_headers(opts: ServerOptions) -> list[str]:
    """Host header values the server accepts: loopback names plus the bound/allowed hosts."""
    hosts = ["localhost", "127.0.0.1", "[::1]"]
    if opts.allowed_hosts:
        hosts += opts.allowed_hosts
    elif opts.host in _WILDCARDS:
        hosts += _machine_names()
    else:
        hosts.append(_url_host(opts.host))
    out: list[str] = []
    for h in hosts:
        out.append(h)
        bracketed = h.startswith("[") and h.endswith("]")
        if "*" not in h and (bracketed or ":" not in h):  # no port given yet
            out.append(f"{h}:{opts.port}")
    return list(dict.fromkeys(out))


def check_port_free(host: str, port: int) -> None:
    """Raise `UserError` if `host:port` cannot be bound (in use, or not this machine)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            raise UserError(
                f"cannot listen on {host}:{port} ({exc.strerror}); "
                "pick another --port or stop the process using it"
            ) from None


def check_auth_available() -> None:
    """Raise `UserError` unless the `mlflow[auth]` extra (Flask-WTF) is importable."""
    import importlib.util

    if importlib.util.find_spec("flask_wtf") is None:
        raise UserError(
            "--auth needs MLflow's basic-auth extra, which is not installed; "
            "run: pip install 'mlflow[auth]'"
        )


def upgrade_schema(backend_store_uri: str, timeout_s: float = 300.0) -> None:
    """Create or upgrade the tracking database schema (`mlflow db upgrade`) in a child.

    For sqlite it runs under the store's schema lock (`sepconc.tracking.store.store_lock`),
    the same one `train` runs and sweep drivers take, so their first uses never race it.
    Raises `UserError` (one line) when the upgrade fails or takes over `timeout_s`.
    """
    scheme = backend_store_uri.split(":", 1)[0].split("+", 1)[0]
    if scheme not in _DB_SCHEMES:
        raise UserError(
            f"--backend-store-uri {backend_store_uri!r} is not a database URI; "
            "use sqlite:///PATH or postgresql://... (the file store is deprecated)"
        )
    cmd = [sys.executable, "-m", "mlflow", "db", "upgrade", backend_store_uri]
    try:
        with store_lock(backend_store_uri):  # creates a sqlite file's folder
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                                  check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise UserError(
            f"mlflow db upgrade {backend_store_uri} took over {timeout_s:.0f} s; "
            "check the database is reachable and not locked"
        ) from None
    if done.returncode != 0:
        raise UserError(
            f"mlflow db upgrade {backend_store_uri} failed: {_last_line(done.stderr + done.stdout)}"
        )


def write_auth_config(opts: ServerOptions) -> Path:
    """Write the basic-auth app's config (mode 0600) and return its path; no password."""
    auth_dir = opts.runs_dir / AUTH_DIR
    auth_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(auth_dir, 0o700)
    path = auth_dir / "basic_auth.ini"
    text = (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{auth_dir / 'basic_auth.db'}\n"
        f"admin_username = {opts.admin_username}\n"
        "# admin_password comes from the environment of the server process only.\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n"
        "auth_cache_max_size = 10000\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # the file may have existed with a wider mode
    return path


def build_command(opts: ServerOptions) -> tuple[list[str], dict[str, str]]:
    """The `mlflow server` command line and the environment entries it adds or overrides."""
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--host", opts.host,
        "--port", str(opts.port),
        "--workers", "1",
        "--backend-store-uri", str(opts.backend_store_uri),
        "--serve-artifacts",
        "--artifacts-destination", str(opts.artifacts_destination),
        "--allowed-hosts", ",".join(allowed_host_headers(opts)),
    ]  # fmt: skip
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if opts.auth:
        if not opts.admin_password:
            raise UserError("basic-auth needs an admin password; none was given")
        cmd += ["--app-name", "basic-auth"]
        env.update(
            MLFLOW_AUTH_CONFIG_PATH=str(opts.runs_dir / AUTH_DIR / "basic_auth.ini"),
            MLFLOW_AUTH_ADMIN_USERNAME=opts.admin_username,
            MLFLOW_AUTH_ADMIN_PASSWORD=opts.admin_password,
            MLFLOW_FLASK_SERVER_SECRET_KEY=opts.secret_key or secrets.token_hex(32),
        )
    return cmd, env


def start_server(opts: ServerOptions) -> subprocess.Popen:
    """Upgrade the schema, start the server, and return once `/health` answers.

    Raises `UserError` (with the server's last log line) if it exits or does not answer
    within `opts.startup_timeout_s`; the process group is stopped before raising.
    """
    check_port_free(opts.host, opts.port)
    if opts.auth:
        check_auth_available()
    cmd, extra_env = build_command(opts)
    opts.runs_dir.mkdir(parents=True, exist_ok=True)
    if "://" not in str(opts.artifacts_destination):
        Path(str(opts.artifacts_destination)).mkdir(parents=True, exist_ok=True)
    upgrade_schema(str(opts.backend_store_uri))
    if opts.auth:
        write_auth_config(opts)
    log_start = opts.log_path.stat().st_size if opts.log_path.exists() else 0
    log.info("starting mlflow server on %s:%d (log: %s)", opts.host, opts.port, opts.log_path)
    with open(opts.log_path, "ab") as logf:
        proc = subprocess.Popen(
            cmd,
            env={**os.environ, **extra_env},
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop_server ends all of it
        )
    try:
        _wait_ready(proc, opts, log_start)
    except BaseException:
        stop_server(proc)
        raise
    return proc


def _wait_ready(proc: subprocess.Popen, opts: ServerOptions, log_start: int) -> None:
    base = f"http://{_url_host('127.0.0.1' if opts.host in _WILDCARDS else opts.host)}"
    base += f":{opts.port}"
    deadline = time.monotonic() + opts.startup_timeout_s
    while True:
        if proc.poll() is not None:
            raise UserError(
                f"mlflow server exited with status {proc.returncode}: "
                f"{_log_tail(opts.log_path, log_start)} (log: {opts.log_path})"
            )
        if _get(f"{base}/health") == 200:
            break
        if time.monotonic() > deadline:
            raise UserError(
                f"mlflow server did not answer {base}/health within "
                f"{opts.startup_timeout_s:.0f} s: {_log_tail(opts.log_path, log_start)}"
            )
        time.sleep(0.25)
    if opts.auth:
        url = f"{base}/api/2.0/mlflow/users/get?username={opts.admin_username}"
        status = _get(url, (opts.admin_username, str(opts.admin_password)))
        if status == 401:
            raise UserError(
                f"the admin password does not match the one stored in "
                f"{opts.runs_dir / AUTH_DIR / 'basic_auth.db'} when it was created; "
                "use that password, or delete that file to start a new user store"
            )


def _get(url: str, credentials: tuple[str, str] | None = None) -> int | None:
    req = urllib.request.Request(url)
    if credentials:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def _log_tail(path: Path, start: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return _last_line(f.read().decode(errors="replace"))
    except OSError:
        return "(no log)"


def stop_server(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Stop the server and every process in its group; SIGKILL what outlives `timeout_s`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # `mlflow server` forwards it to uvicorn
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("mlflow server did not stop within %.0f s; killing it", timeout_s)
    # The group id is the server's pid (start_new_session); end whatever is left in it.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _group_alive(proc):
            break
        os.killpg(proc.pid, sig)
        end = time.monotonic() + (timeout_s / 2 if sig == signal.SIGTERM else timeout_s)
        while _group_alive(proc) and time.monotonic() < end:
            time.sleep(0.1)
    if proc.poll() is None:
        proc.wait(timeout_s)


def _group_alive(proc: subprocess.Popen) -> bool:
    proc.poll()  # reap the leader, or its zombie keeps the group "alive"
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
