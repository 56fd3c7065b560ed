"""Joining a running Ray cluster (`--address`): fail fast, in one line, when it cannot be done.

`check_address` tests that something listens there (no Ray call); `join_cluster` connects
with this machine's auth token, holding back the C++ warnings Ray prints on fd 2 while a
refused join retries, and turns every refusal into a `UserError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
from urllib.parse import urlsplit

from sepconc.errors import UserError, clean_reason


def join_cluster(address: str, runtime_env: dict | None = None) -> None:
    """`ray.init(address=...)`; a one-line `UserError` when unreachable, refused or mismatched."""
    import ray

    check_address(address)  # Ray's own connect retries for long and prints many lines
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # a token-auth cluster needs it set
    from ray.exceptions import AuthenticationError

    refused = (f"Ray cluster at {address} refused this machine's auth token (none here, or "
               f"not the cluster's); copy the head's ~/.ray/auth_token here or point "
               f"RAY_AUTH_TOKEN_PATH at it (RAY_AUTH_MODE=disabled for a cluster without "
               f"auth)")  # fmt: skip
    # A refused join retries for ~20 s, one C++ warning a second on fd 2: held back,
    # read for the cause, and sent to the log (not the terminal) when the join succeeds.
    with held_stderr() as held:
        try:
            ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING,
                     log_to_driver=False)  # fmt: skip
        except AuthenticationError:
            raise UserError(refused) from None
        except (ConnectionError, RuntimeError, ValueError) as exc:
            if "InvalidAuthToken" in held.read():
                raise UserError(refused) from None
            raise UserError(f"cannot join Ray cluster at {address} ({clean_reason(exc)}); "
                            f"check the address (ray status), the auth token and that this "
                            f"Ray is the cluster's version, or drop --address") from None  # fmt: skip
        replay = held.read()
    if replay.strip():
        logging.getLogger("ray").info("while joining %s:\n%s", address, replay.rstrip())


class HeldStderr:
    """File descriptor 2 (C++ logs included) sent to a temporary file; `read()` its text."""

    def __init__(self, file):
        self.file = file

    def read(self) -> str:
        sys.stderr.flush()
        self.file.seek(0)
        return self.file.read().decode(errors="replace")


@contextlib.contextmanager
def held_stderr():
    """Hold back everything written to fd 2 while the block runs (the file is then deleted)."""
    with tempfile.TemporaryFile() as file:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(file.fileno(), 2)
        try:
            yield HeldStderr(file)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when nothing listens at a Ray `--address`, before `ray.init`.

    A plain TCP connect to `HOST:PORT` (or `ray://HOST:PORT`); `auto` and `local` are
    left to Ray. Nothing is sent, nothing is started.
    """
    if address in ("auto", "local"):
        return
    try:
        parts = urlsplit("//" + address.split("://", 1)[-1])
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or port is None:
        raise UserError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379 or "
                        f"ray://10.0.0.5:10001); fix it or drop --address")  # fmt: skip
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise UserError(f"cannot reach Ray cluster at {address} ({exc.strerror or exc}); start it "
                        f"(`ray up cluster.yaml` or `ray start --head`), check the address with "
                        f"`ray status`, or drop --address") from None  # fmt: skip
