"""A read-only web dashboard over a trial store (``localrules dashboard``; docs/dashboard.md).

``views`` turns store reads into the JSON the API serves (no web framework in it), ``app``
routes pages and ``/api/...`` with Starlette, ``access`` guards them (token, hosts, headers)
and ``serve`` checks the address and runs uvicorn. The web libraries are the ``dashboard``
extra; nothing here is imported by the rest of localrules.
"""
