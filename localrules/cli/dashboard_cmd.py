"""``localrules dashboard``: watch a search in a browser (docs/dashboard.md).

A read-only web app over the trial database: experiments, one experiment's trials (filtered,
sorted, paged) with its progress, importance and top trials, one trial's curves and attempts,
and the workers' leases. It binds 127.0.0.1 unless given a token; it never writes to the
database.
"""

from __future__ import annotations

import argparse
import os

from localrules.cli.arguments import add_db_argument, number
from localrules.validation import Limit

PORT = Limit(0, 65535, integer=True)
REFRESH = Limit(0.5, 3600)


def register(sub: argparse._SubParsersAction) -> None:
    from localrules.dashboard.access import TOKEN_ENV

    p = sub.add_parser("dashboard", help="a live web dashboard over a trial database",
                       description=__doc__.split("\n\n")[0])
    add_db_argument(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs --token)")
    p.add_argument("--port", type=number(PORT), default=8080,
                   help="port (default 8080; 0: any free port)")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV) or None,
                   help=f"a secret every request must carry (default ${TOKEN_ENV}); required "
                        "with a --host other than loopback")
    p.add_argument("--refresh", type=number(REFRESH), default=5.0,
                   help="seconds between a page's updates (default 5)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from localrules.dashboard.serve import DashboardOptions, serve

    serve(DashboardOptions(args.db, args.host, args.port, args.token, args.refresh))
    return 0
