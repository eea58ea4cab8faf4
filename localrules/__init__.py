"""localrules: tree-structured TPE searches over the metaparameters of local learning rules.

Reproduces and extends the system of Kunin et al., "Two Routes to Scalable Credit Assignment
without Weight Symmetry" (ICML 2020). Importing this package imports nothing heavy: TensorFlow
is loaded only by the modules that build or train networks.
"""

__version__ = "0.1.0"


def open_store(url: str, create: bool = True, read_only: bool = False):
    """The trial database at ``url`` (``localrules.store.open_store``): ``sqlite:///PATH.db``
    or ``mongodb://HOST/DB``; ``read_only=True`` only reads (what analysis should use). Its
    ``query(experiments, where=..., columns=...)`` gives trials as a pandas DataFrame
    (docs/query.md). Imported when called: ``import localrules`` stays free of side effects."""
    from localrules.store import open_store as open_

    return open_(url, create=create, read_only=read_only)
