"""Queries over the trial database: a small filter language (``language``), its fields and
one semantics (``fields``), its translations to SQLite (``to_sql``) and MongoDB
(``to_mongo``) so the database does the filtering, sorting and limiting (``plan``), and the
query run against a store (``run``: ``TrialStore.select`` and ``TrialStore.query``).
"""

from localrules.store.query.fields import Catalog, bind
from localrules.store.query.language import QuerySyntaxError, parse
from localrules.store.query.plan import Order

__all__ = ["Catalog", "Order", "QuerySyntaxError", "bind", "parse"]
