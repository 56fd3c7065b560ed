"""`launch.py mlflow-server`: a tracking server with safe defaults, in the foreground.

Prints `tracking URI: http://HOST:PORT` once the server answers, then waits; Ctrl-C or
SIGTERM stops the server's whole process group. See `sepconc.tracking.server`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from sepconc.errors import UserError

PASSWORD_ENV = "SEPCONC_MLFLOW_ADMIN_PASSWORD"
SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"
MIN_PASSWORD_LEN = 12  # MLflow 3 refuses shorter admin passwords


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "mlflow-server",
        help="start an MLflow tracking server with safe defaults and print its URI",
        description=(
            "Start an MLflow tracking server: loopback by default, one worker, schema "
            "created before it serves, artifacts proxied through the server, Host header "
            "checked. Stays in the foreground until Ctrl-C or SIGTERM."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=5000, help="TCP port (default %(default)s)")
    p.add_argument(
        "--runs-dir", type=Path, default=Path("runs"), help="runs folder (default %(default)s)"
    )
    p.add_argument(
        "--backend-store-uri",
        default=None,
        help="tracking database (default sqlite:///<runs-dir>/mlflow.db)",
    )
    p.add_argument(
        "--artifacts-destination",
        default=None,
        help="where the server stores artifacts (default <runs-dir>/mlflow-artifacts; "
        "or s3://bucket/prefix)",
    )
    p.add_argument(
        "--allowed-hosts",
        default=None,
        help="comma-separated Host header values to accept besides localhost "
        "(default: the --host value, or this machine's names for 0.0.0.0)",
    )
    p.add_argument(
        "--auth",
        action="store_true",
        help=f"enable MLflow basic auth (needs mlflow[auth]; admin password from ${PASSWORD_ENV})",
    )
    p.add_argument(
        "--admin-user", default="admin", help="basic-auth admin user name (default %(default)s)"
    )
    p.set_defaults(func=run)


def _split_hosts(value: str | None) -> list[str] | None:
    if value is None:
        return None
    hosts = [h.strip() for h in value.split(",") if h.strip()]
    if not hosts:
        raise UserError(f"--allowed-hosts {value!r} names no host; give e.g. 'mlflow.example.org'")
    return hosts


class _Terminated(Exception):
    """SIGTERM arrived: stop the server like Ctrl-C does."""


def _on_sigterm(signum, frame):  # signal handler signature
    raise _Terminated


def run(args: argparse.Namespace) -> int:
    from sepconc.tracking.server import (
        ServerOptions,
        is_loopback,
        start_server,
        stop_server,
        tracking_uri,
    )

    password = None
    if args.auth:
        password = os.environ.get(PASSWORD_ENV) or None
        if password is None:
            raise UserError(
                f"--auth needs the admin password in ${PASSWORD_ENV}, which is unset or "
                f"empty; export {PASSWORD_ENV}=... (there is no default password)"
            )
        if len(password) < MIN_PASSWORD_LEN:
            raise UserError(
                f"${PASSWORD_ENV} has {len(password)} characters; MLflow's basic auth needs "
                f"at least {MIN_PASSWORD_LEN}: choose a longer password"
            )
    opts = ServerOptions(
        host=args.host,
        port=args.port,
        runs_dir=args.runs_dir,
        backend_store_uri=args.backend_store_uri,
        artifacts_destination=args.artifacts_destination,
        allowed_hosts=_split_hosts(args.allowed_hosts),
        auth=args.auth,
        admin_username=args.admin_user,
        admin_password=password,
        secret_key=os.environ.get(SECRET_KEY_ENV) or None,
    )
    if not is_loopback(opts.host):
        print(
            f"warning: --host {opts.host} is reachable from other machines"
            + ("" if opts.auth else " and anyone who reaches it can read and write runs (--auth)")
            + "; prefer 127.0.0.1 with SSH port forwarding, or limit access with a firewall",
            file=sys.stderr,
        )

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    proc = None
    try:
        proc = start_server(opts)
        print(f"tracking URI: {tracking_uri(opts)}", flush=True)
        print(f"server log: {opts.log_path} (Ctrl-C to stop)", flush=True)
        if opts.auth:
            print(
                f"clients: export MLFLOW_TRACKING_USERNAME={opts.admin_username} "
                "MLFLOW_TRACKING_PASSWORD=<the admin password>",
                flush=True,
            )
        status = proc.wait()
        raise UserError(
            f"mlflow server exited on its own with status {status}; see {opts.log_path}"
        )
    except (KeyboardInterrupt, _Terminated):
        return 0
    finally:
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if proc is not None:
                stop_server(proc)
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
