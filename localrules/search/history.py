"""A hyperopt ``Trials`` rebuilt from the store, so TPE sees exactly the history it would have
seen had it run in this process the whole time.

Each stored trial keeps hyperopt's ``idxs``/``vals``; its loss is the negated objective (TPE
minimises, we maximise top-1). Queued and running trials go in as hyperopt's new/running jobs, so
they count towards the startup trials and enter TPE with infinite loss, as in hyperopt's own
asynchronous runs. Failed and cancelled trials are left out, as hyperopt's ``Trials.refresh``
would drop them: they are neither modelled nor counted towards the startup trials (a failure is
usually the machine's, not the configuration's). A diverged trial is ``done`` with a
chance-level objective and is modelled like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from localrules.spaces.nodes import plain
from localrules.store.documents import (
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    HistoryEntry,
    Trial,
)

Entry = Trial | HistoryEntry

log = logging.getLogger(__name__)

DOMAIN_CMD = ("domain_attachment", "FMinIter_Domain")


def hyperopt_doc(trials, trial: Entry) -> dict[str, Any]:
    """The hyperopt trial document of a stored trial (``trials`` is the hyperopt Trials)."""
    from hyperopt import base as hyperopt

    state, result = {  # failed and cancelled trials never get here (see usable)
        QUEUED: (hyperopt.JOB_STATE_NEW, {"status": hyperopt.STATUS_NEW}),
        RUNNING: (hyperopt.JOB_STATE_RUNNING, {"status": hyperopt.STATUS_NEW}),
    }.get(trial.state, (None, None))
    if trial.state == DONE:
        objective = (trial.result or {}).get("objective")
        if objective is None:
            state, result = hyperopt.JOB_STATE_ERROR, {"status": hyperopt.STATUS_FAIL}
        else:
            state, result = hyperopt.JOB_STATE_DONE, {"status": hyperopt.STATUS_OK,
                                                      "loss": -float(objective)}
    # Stored misc is plain JSON already; hyperopt only reads it (copies keep the store's apart).
    misc = {"tid": trial.trial_id, "cmd": DOMAIN_CMD, "workdir": None,
            "idxs": dict(trial.misc["idxs"]), "vals": dict(trial.misc["vals"])}
    (doc,) = trials.new_trial_docs([trial.trial_id], [None], [result], [misc])
    doc["state"] = state
    return doc


def usable(trial: Entry) -> bool:
    """Whether a stored trial belongs in the history: failed and cancelled ones do not
    (hyperopt's refresh would drop them), nor any whose misc is not idxs/vals mappings (a
    tampered document must not stop the search)."""
    if trial.state in (FAILED, CANCELLED):
        return False
    misc = trial.misc
    ok = isinstance(misc, Mapping) and all(isinstance(misc.get(k), Mapping)
                                           for k in ("idxs", "vals"))
    if not ok:
        log.warning("trial %s has no usable hyperopt misc; left out of TPE's history",
                    trial.trial_id)
    return ok


def rebuild(stored: Sequence[Entry]):
    """A ``hyperopt.Trials`` holding the stored trials that belong in it, by trial id."""
    import hyperopt

    trials = hyperopt.Trials()
    docs = [hyperopt_doc(trials, t) for t in sorted(stored, key=lambda t: t.trial_id)
            if usable(t)]
    trials.insert_trial_docs(docs)
    trials.refresh()
    return trials


def misc_from_doc(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON part of a hyperopt doc's misc that the store keeps (plain Python numbers)."""
    return {"idxs": _lists(doc["misc"]["idxs"]), "vals": _lists(doc["misc"]["vals"])}


def _lists(mapping: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    return {label: [plain(v) for v in values] for label, values in mapping.items()}
