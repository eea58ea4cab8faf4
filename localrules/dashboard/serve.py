"""Starting the dashboard: check the address and the token, open the store read-only, bind the
port, and serve with uvicorn until interrupted.

Everything that can be refused is refused before the server starts, each with its own message:
a host other than loopback without a token, a short token, a port in use or not ours to bind
(``ValueError``: exit status 2), a database that cannot be opened (``StoreError``: 1). The
socket is bound here and handed to uvicorn, so the port checked is the port served.
"""

from __future__ import annotations

import errno
import logging
import socket
from dataclasses import dataclass

from localrules.dashboard.access import check_token, is_loopback

log = logging.getLogger(__name__)

EXTRA_HINT = "the dashboard needs its extra: pip install 'localrules[dashboard]'"


@dataclass(frozen=True)
class DashboardOptions:
    """Where to serve which database, and how."""

    url: str
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    refresh: float = 5.0

    def __post_init__(self) -> None:
        if self.token is not None:
            check_token(self.token)
        if not is_loopback(self.host) and self.token is None:
            raise ValueError(f"--host {self.host}: binding beyond this machine needs a token "
                             "(--token or $LOCALRULES_DASHBOARD_TOKEN), which every request "
                             "must then carry; without one, keep the default 127.0.0.1")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port: 0 to 65535, got {self.port}")

    @property
    def loopback_only(self) -> bool:
        return is_loopback(self.host)


def require_extra() -> None:
    """ValueError naming the extra when the web libraries are not installed."""
    import importlib.util

    missing = [m for m in ("starlette", "uvicorn", "plotly") if importlib.util.find_spec(m)
               is None]
    if missing:
        raise ValueError(f"{EXTRA_HINT} ({', '.join(missing)} not installed)")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; ValueError if the port is taken or not ours."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ValueError(f"--host {host}: not an address of this machine ({err})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise ValueError(f"--port {port}: already in use on {host}; pick another port "
                             "(or 0 for any free one)") from None
        raise ValueError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    sock.listen(128)
    return sock


def address(sock: socket.socket, host: str, token: str | None) -> str:
    """The URL to open (with the token, which the page exchanges for a cookie)."""
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def serve(options: DashboardOptions) -> None:
    """Serve until Ctrl-C. Refusals come before anything is bound (see the module doc)."""
    require_extra()
    import uvicorn

    from localrules.dashboard.app import create_app
    from localrules.dashboard.views import DashboardData
    from localrules.store import open_store
    from localrules.store.urls import redact, url_secrets

    store = open_store(options.url, read_only=True)
    try:
        store.list_experiments()  # reach the database now: an unreachable one fails here
        if store.snapshot:
            log.warning("%s is of an older schema: the dashboard shows a copy taken now, and "
                        "no later write; open it once with this localrules (e.g. "
                        "localrules trials) to upgrade it, then restart the dashboard",
                        redact(options.url))
        sock = bind(options.host, options.port)
        data = DashboardData(store, options.url)
        app = create_app(data, token=options.token, loopback_only=options.loopback_only,
                         refresh=options.refresh, secrets=url_secrets(options.url))
        log.info("dashboard of %s at %s (Ctrl-C stops it)", redact(options.url),
                 address(sock, options.host, options.token))
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn shuts down cleanly, then passes Ctrl-C on
            log.info("dashboard stopped")
    finally:
        store.close()
