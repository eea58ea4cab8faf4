"""The dashboard's routes: four pages (one HTML shell that its script fills from the API) and
the JSON API under ``/api/`` (docs/dashboard.md).

Every API answer is JSON. Bad input (an unknown state, a filter not in the query language, a
page out of range) is 400 with ``{"error": what was wrong and what is valid}``; an unknown
experiment or trial 404; a database that is away 503, its message scrubbed of the URL's
secrets. The endpoints are plain functions, which Starlette runs in its thread pool: the store's
reads block.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any

from localrules.dashboard.views import DashboardData, NotFound, TrialPageRequest

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
REFRESH_SECONDS = 5.0


def plotly_js() -> Path:
    """plotly.js as the ``plotly`` package ships it: served from here, never from a CDN."""
    path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():
        raise FileNotFoundError(f"plotly.js is missing from the plotly package ({path}); "
                                "reinstall it: pip install 'localrules[dashboard]'")
    return path


def create_app(data: DashboardData, *, token: str | None = None, loopback_only: bool = True,
               refresh: float = REFRESH_SECONDS, secrets: frozenset[str] = frozenset()) -> Any:
    """The ASGI app over ``data`` (a read-only store's ``DashboardData``)."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from localrules.dashboard.access import Guard
    from localrules.store.base import StoreError
    from localrules.store.urls import scrub

    shell = (STATIC / "index.html").read_text(encoding="utf-8")
    plotly = plotly_js()

    def answer(read: Any) -> Any:
        """A JSON response of ``read()``, its failures mapped to statuses."""
        try:
            body, status = read(), 200
        except NotFound as err:
            body, status = {"error": str(err)}, 404
        except ValueError as err:
            body, status = {"error": str(err)}, 400
        except StoreError as err:
            log.warning("database error: %s", scrub(str(err), secrets))
            body, status = {"error": f"database error: {scrub(str(err), secrets)}"}, 503
        return JSONResponse(body, status_code=status, headers={"cache-control": "no-store"})

    def page(request: Any) -> Any:
        return HTMLResponse(shell, headers={"cache-control": "no-store"})

    def meta(request: Any) -> Any:
        return answer(lambda: {"database": data.database, "refresh_seconds": refresh,
                               "snapshot": data.store.snapshot})

    def experiments(request: Any) -> Any:
        return answer(data.experiments)

    def experiment(request: Any) -> Any:
        return answer(lambda: data.experiment(request.path_params["name"]))

    def trials(request: Any) -> Any:
        query = {k: request.query_params.getlist(k) for k in request.query_params}
        return answer(lambda: data.trials(request.path_params["name"],
                                          TrialPageRequest.from_query(query)))

    def progress(request: Any) -> Any:
        return answer(lambda: data.progress(request.path_params["name"]))

    def importance(request: Any) -> Any:
        return answer(lambda: data.importance(request.path_params["name"]))

    def top(request: Any) -> Any:
        def read() -> Any:
            from localrules.dashboard.views import DEFAULT_TOP, MAX_TOP, parse_count

            n = parse_count(request.query_params.get("n"), "n", 1, MAX_TOP, DEFAULT_TOP)
            return data.top(request.path_params["name"], n)

        return answer(read)

    def trial(request: Any) -> Any:
        return answer(lambda: data.trial(request.path_params["name"],
                                         request.path_params["trial_id"]))

    def workers(request: Any) -> Any:
        return answer(data.workers)

    def plotly_file(request: Any) -> Any:
        return FileResponse(plotly, media_type="text/javascript",
                            headers={"cache-control": "max-age=86400"})

    def missing(request: Any, exc: Any) -> Any:
        return JSONResponse({"error": f"no such address: {request.url.path[:200]}"},
                            status_code=404)

    name = "{name:str}"
    routes = [
        Route("/", page), Route("/workers", page), Route(f"/experiments/{name}", page),
        Route(f"/experiments/{name}/trials/{{trial_id:int}}", page),
        Route("/api/meta", meta), Route("/api/experiments", experiments),
        Route(f"/api/experiments/{name}", experiment),
        Route(f"/api/experiments/{name}/trials", trials),
        Route(f"/api/experiments/{name}/trials/{{trial_id:int}}", trial),
        Route(f"/api/experiments/{name}/progress", progress),
        Route(f"/api/experiments/{name}/importance", importance),
        Route(f"/api/experiments/{name}/top", top),
        Route("/api/workers", workers),
        Route("/static/plotly.min.js", plotly_file),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    app = Starlette(routes=routes, exception_handlers={404: missing})
    return Guard(app, token, loopback_only)
