"""An adversarial pass through the CLI, as a hostile user and an unlucky operator would make it,
with fresh cases from every seed. Each case runs ``localrules`` in its own process and is judged
from the outside:

- no traceback, no hang (each case has a time limit);
- bad input exits 2 with a message naming what was wrong, and nothing is written: a refused
  ``search``/``worker``/``train`` creates no database and no run directory, a reader changes no
  byte of the file it reads (nor creates side files next to another program's);
- a database error exits 1, and no form of the URL's password is printed;
- hostile trial documents planted in a real store are failed or skipped, one at a time: the other
  trials are listed, the search resumes, a worker fails the hostile queued trial and goes on;
- a search controller killed with SIGKILL is started again at once, and resumes.

Case families: every numeric flag of every subcommand (found by walking the parser) with
non-finite, absurd and non-numeric values; database URLs with passwords full of characters that
break quoting; SQLite files that are not localrules stores; YAML spaces built to exhaust a parser
(deep nesting, a 200,000-option choice, an alias bomb, a config key set twice); stored documents
(nesting bombs, wrong container types, non-JSON rows, a hyperopt ``misc`` naming another trial).

Prints one JSON line: cases run, findings per kind (all should be 0) and the first findings.
``--seed`` draws fresh cases; ``--per-flag`` sets how many hostile values each numeric flag gets.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus

log = logging.getLogger("bench_adversarial")

HOSTILE_NUMBERS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-1e309", str(2**64),
                   str(10**30), str(-(2**63) - 1), "9" * 400, "x", "", "0x10", "1e"]
"""Values no numeric flag may accept."""
FAMILIES = ["numeric", "secret", "foreign_file", "yaml_space", "document", "restart"]
PASSWORD_ALPHABET = "abcXYZ019 @:/?#[]%+&=!$'()*,;~ü"


@dataclass
class Case:
    family: str
    argv: list[str]
    expect: tuple[int, ...]
    """Exit statuses that pass."""
    untouched: list[Path] = field(default_factory=list)
    """Paths that must not change (or come to exist) unless the command exits 0."""
    reader: bool = False
    """``untouched`` must not change whatever the exit status (a read-only command)."""
    side_files: bool = False
    """Side files (``-wal``, ``-shm``) next to ``untouched`` count as changes too: another
    program's file (a localrules store's reader may create them, as any SQLite reader does)."""
    secrets: list[str] = field(default_factory=list)
    mentions: str | None = None
    """Text the error must contain (the flag it is about)."""
    timeout: float = 60.0
    after: Callable[[], str | None] | None = None
    """A check once the command ended: a finding, or None."""


def _state(paths: list[Path], side_files: bool) -> list[tuple[str, str | None, tuple[str, ...]]]:
    """Each path's content hash (None if absent) and (``side_files``) the files next to it."""
    out = []
    for path in paths:
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            digest = "dir" if path.is_dir() else None
        side = tuple(sorted(p.name for p in path.parent.glob(path.name + "-*"))) \
            if side_files and path.parent.is_dir() else ()
        out.append((str(path), digest, side))
    return out


def run_case(case: Case, cwd: Path) -> list[tuple[str, str]]:
    """The findings (kind, detail) of one case."""
    before = _state(case.untouched, case.side_files)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "LOCALRULES_DB": f"sqlite:///{cwd}/x.db"}
    started = time.monotonic()
    try:
        result = subprocess.run([sys.executable, "-m", "localrules.cli.main", *case.argv],
                                cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=case.timeout)
    except subprocess.TimeoutExpired:
        return [("hang", f"{case.family}: {' '.join(case.argv)[:200]}")]
    seconds = time.monotonic() - started
    shown = result.stdout + result.stderr
    what = f"{case.family}: {' '.join(case.argv)[:160]} -> {result.returncode} ({seconds:.1f} s)"
    findings = []
    if "Traceback (most recent call last)" in shown:
        findings.append(("traceback", f"{what}: {shown.strip().splitlines()[-1][:200]}"))
    if result.returncode not in case.expect:
        findings.append(("wrong_exit", f"{what}: {shown.strip()[-300:]}"))
    if result.returncode == 2 and not result.stderr.strip():
        findings.append(("no_message", what))
    if case.mentions and result.returncode == 2 and case.mentions not in result.stderr:
        findings.append(("unnamed", f"{what}: {result.stderr.strip()[-200:]}"))
    if (result.returncode != 0 or case.reader) \
            and _state(case.untouched, case.side_files) != before:
        findings.append(("written", what))
    for secret in case.secrets:
        if secret and secret in shown:
            findings.append(("secret_printed", f"{what}: {secret!r}"))
            break
    if case.after is not None and (problem := case.after()):
        findings.append(("lost_or_wrong", f"{what}: {problem}"))
    return findings


# --- numeric flags -------------------------------------------------------------------------------
def numeric_flags() -> dict[tuple[str, ...], list[str]]:
    """Every subcommand's numeric flags: those whose type reads "1" as a number and refuses
    "x" (found by walking the parser, so a new flag is covered the day it is added)."""
    from localrules.cli.main import build_parser

    found: dict[tuple[str, ...], list[str]] = {}

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*path, name))
            elif action.option_strings and callable(action.type) and _is_numeric(action.type):
                found.setdefault(path, []).append(action.option_strings[-1])

    walk(build_parser(), ())
    return found


def _is_numeric(kind: Callable[[str], object]) -> bool:
    """Whether a flag's type reads some plain number as a number (its range may refuse the
    others) and refuses text."""
    for text in ("1", "0.5", "8", "64", "1000"):
        try:
            value = kind(text)
        except Exception:
            continue
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        try:
            kind("x")
        except Exception:
            return True
        return False
    return False


def base_argv(command: tuple[str, ...], tmp: Path, fixture: Path) -> tuple[list[str], list[Path]]:
    """A command line that would run (or wait) if its hostile value were accepted, and the paths
    a refusal must leave alone."""
    fresh = tmp / f"fresh-{random.getrandbits(32):08x}"
    db = f"sqlite:///{fresh}.db"
    reader = ["--db", f"sqlite:///{fixture}", "--experiment", "e"]
    bases: dict[tuple[str, ...], list[str]] = {
        ("search",): ["--space", "ia", "--experiment", "e", "--db", db, "--workers", "0"],
        ("worker",): ["--db", db, "--experiment", "e", "--idle-exit", "2"],
        ("train",): ["--preset", "bp", "--out", str(fresh), "--epochs", "1", "--width", "4"],
        ("trials",): reader,
        ("report", "importance"): reader,
        ("report", "progress"): reader,
        ("report", "weights"): [*reader, "--trial", "0", "--out", str(fresh)],
        ("dynamics",): ["--x", "1", "--lam", "0.5"],
        ("neural-fit",): ["--checkpoint", str(fresh), "--stimuli", "s.npy", "--responses",
                          "r.npy", "--categories", "c.npy", "--out", str(fresh)],
    }
    untouched = [Path(f"{fresh}.db"), fresh, fixture]
    return [*command, *bases.get(command, [])], untouched


def numeric_cases(rng: random.Random, tmp: Path, fixture: Path, per_flag: int) -> list[Case]:
    cases = []
    for command, flags in sorted(numeric_flags().items()):
        for flag in flags:
            for value in rng.sample(HOSTILE_NUMBERS, min(per_flag, len(HOSTILE_NUMBERS))):
                argv, untouched = base_argv(command, tmp, fixture)
                cases.append(Case("numeric", [*argv, f"{flag}={value}"], (2,), untouched,
                                  reader=True, mentions=flag, timeout=45))
    return cases


# --- secrets -------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port nothing listens on: the server a URL names is away."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def password(rng: random.Random) -> str:
    return "".join(rng.choice(PASSWORD_ALPHABET) for _ in range(rng.randint(6, 16)))


def secret_forms(secret: str) -> list[str]:
    return sorted({secret, quote(secret, safe=""), quote_plus(secret), quote(secret)},
                  key=len, reverse=True)


def secret_cases(rng: random.Random, tmp: Path, n: int) -> list[Case]:
    cases = []
    commands = [["trials", "--experiment", "e"], ["experiments"],
                ["report", "progress", "--experiment", "e"],
                ["search", "--space", "ia", "--experiment", "e", "--workers", "0"]]
    for _ in range(n):
        secret = password(rng)
        written = secret if rng.random() < 0.5 else quote(secret, safe="")
        option = rng.choice(["", "&tlsCertificateKeyFilePassword=" + quote(secret, safe="")])
        url = (f"mongodb://alice:{written}@127.0.0.1:{free_port()}/lr?"
               f"serverSelectionTimeoutMS=300&connectTimeoutMS=300{option}")
        cases.append(Case("secret", ["-v", *rng.choice(commands), "--db", url], (1, 2),
                          secrets=secret_forms(secret), timeout=60))
    return cases


# --- foreign files -------------------------------------------------------------------------------
def foreign_cases(tmp: Path) -> list[Case]:
    folder = tmp / "foreign"
    folder.mkdir()
    files = {"empty": folder / "empty.db", "other": folder / "other.db",
             "other_wal": folder / "other_wal.db", "text": folder / "text.db"}
    files["empty"].touch()
    for name, mode in (("other", "delete"), ("other_wal", "wal")):
        with sqlite3.connect(files[name]) as db:
            db.execute(f"PRAGMA journal_mode={mode}")
            db.execute("CREATE TABLE notes (x)")
        db.close()
    files["text"].write_text("notes, not a database\n" * 40)
    readers = [["trials", "--experiment", "e"], ["experiments"],
               ["report", "progress", "--experiment", "e"],
               ["report", "importance", "--experiment", "e"]]
    writers = [["search", "--space", "ia", "--experiment", "e", "--workers", "0"],
               ["worker", "--experiment", "e", "--idle-exit", "1"]]
    cases = []
    for name, path in files.items():
        for argv in readers + (writers if name != "empty" else []):
            cases.append(Case("foreign_file", [*argv, "--db", f"sqlite:///{path}"], (2,),
                              [path], reader=True, side_files=True, timeout=45))
    return cases


# --- YAML spaces ---------------------------------------------------------------------------------
def space_cases(tmp: Path) -> list[Case]:
    folder = tmp / "spaces"
    folder.mkdir()
    depth = 400
    deep = "parameters:\n  run.batch_size: " + "[" * depth + "1" + "]" * depth + "\n"
    nested_choice = "parameters:\n"
    indent = "  "
    for i in range(depth):
        nested_choice += f"{indent}p{i}:\n{indent}  key: null\n{indent}  choice:\n" \
                         f"{indent}    - value: {i}\n{indent}      parameters:\n"
        indent += "        "
    huge = "parameters:\n  run.batch_size: {choice: [" + ", ".join(
        str(i) for i in range(200_000)) + "]}\n"
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
        for p, c in zip("abcdefg", "bcdefgh", strict=True)) + "parameters: *h\n"
    twice = ("parameters:\n  run.batch_size: {choice: [16, 32]}\n"
             "  bs: {key: run.batch_size, choice: [64, 128]}\n")
    spaces = {"deep": deep, "nested_choice": nested_choice, "huge_choice": huge,
              "alias_bomb": bomb, "key_twice": twice, "not_a_mapping": "- 1\n- 2\n",
              "binary": "\x00\x01\x02 parameters"}
    cases = []
    for name, text in spaces.items():
        path = folder / f"{name}.yaml"
        path.write_text(text)
        db = tmp / f"space-{name}.db"
        cases.append(Case("yaml_space", ["search", "--space", str(path), "--experiment", "e",
                                         "--db", f"sqlite:///{db}", "--workers", "0"],
                          (2,), [db], timeout=30))
    return cases


# --- hostile stored documents --------------------------------------------------------------------
def build_fixture(tmp: Path) -> Path:
    """A store as a real search leaves it: ``localrules search`` queues its first trials (and
    is stopped), then every queued trial is completed through the store with an objective."""
    path = tmp / "fixture.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "localrules.cli.main", "search", "--space", "ia", "--experiment",
         "e", "--db", f"sqlite:///{path}", "--workers", "0", "--max-trials", "8",
         "--concurrency", "8", "--references", "bp"],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    from localrules.store import open_store

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(1)
        if path.exists():
            with open_store(f"sqlite:///{path}", read_only=True) as store:
                if store.get_experiment("e") and len(store.trials("e")) >= 8:
                    break
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    with open_store(f"sqlite:///{path}") as store:
        if len(store.trials("e")) < 8:
            raise SystemExit(f"the fixture search queued too few trials: {err[-500:]}")
        rng = random.Random(0)
        while (trial := store.reserve("bench", 60, ["e"])) is not None:
            store.complete("e", trial.trial_id, trial.attempt,
                           {"objective": rng.uniform(0.1, 0.9), "diverged": False})
    return path


HOSTILE_COLUMNS = {
    "config_nesting_bomb": ("config", "[" * 100_000 + "]" * 100_000),
    "config_list": ("config", "[1, 2, 3]"),
    "config_not_json": ("config", "{not json"),
    "params_string": ("params", '"just a string"'),
    "result_not_json": ("result", "{'objective': 0.5}"),
    "result_nesting_bomb": ("result", '{"objective": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    "misc_other_tid": ("misc", None),
}


def plant(source: Path, target: Path, kind: str, state: str) -> int:
    """A copy of ``source`` with one more trial of experiment ``e`` whose ``kind`` column is
    hostile, in ``state``; its trial id."""
    import shutil

    shutil.copy(source, target)
    with sqlite3.connect(target) as db:
        row = db.execute("SELECT * FROM trials WHERE experiment='e' AND state='done' "
                         "ORDER BY trial_id LIMIT 1").fetchone()
        names = [d[0] for d in db.execute("SELECT * FROM trials LIMIT 0").description]
        doc = dict(zip(names, row, strict=True))
        (trial_id,) = db.execute("SELECT MAX(trial_id) + 1 FROM trials").fetchone()
        column, value = HOSTILE_COLUMNS[kind]
        if kind == "misc_other_tid":
            misc = json.loads(doc["misc"])
            misc["tid"] = 0
            value = json.dumps(misc)
        doc.update({"trial_id": trial_id, "state": state, column: value, "reference": None,
                    "reference_key": None})
        if state == "queued":
            doc.update({"result": None, "worker": None, "lease_expires": None})
        (doc["seq"],) = db.execute("UPDATE sequence SET value = value + 1 WHERE name='trials' "
                                   "RETURNING value").fetchone()
        db.execute("UPDATE experiments SET next_trial_id = ? WHERE name='e'", (trial_id + 1,))
        db.execute(f"INSERT INTO trials ({', '.join(doc)}) VALUES "
                   f"({', '.join('?' for _ in doc)})", list(doc.values()))
    db.close()
    return trial_id


def document_cases(tmp: Path, fixture: Path) -> list[Case]:
    folder = tmp / "documents"
    folder.mkdir()
    with sqlite3.connect(f"file:{fixture}?mode=ro", uri=True) as db:
        (searched,) = db.execute("SELECT COUNT(*) FROM trials WHERE reference IS NULL").fetchone()
    db.close()
    cases = []
    for kind in HOSTILE_COLUMNS:
        done = folder / f"{kind}-done.db"
        plant(fixture, done, kind, "done")
        url = f"sqlite:///{done}"
        for argv in (["trials", "--experiment", "e"],
                     ["trials", "--experiment", "e", "--format", "json"],
                     ["report", "progress", "--experiment", "e"],
                     ["report", "importance", "--experiment", "e"]):
            cases.append(Case("document_read", [*argv, "--db", url], (0,), [done],
                              reader=True, timeout=90))
        # A resume with the fixture's search trials done: it finishes at once (the hostile
        # trial is left out, or counted).
        resumed = folder / f"{kind}-resume.db"
        plant(fixture, resumed, kind, "done")
        cases.append(Case("document_resume",
                          ["search", "--space", "ia", "--experiment", "e", "--db",
                           f"sqlite:///{resumed}", "--workers", "0", "--max-trials", str(searched),
                           "--concurrency", "8", "--references", "bp"], (0,), timeout=120))
        if kind.startswith(("config", "params")):
            queued = folder / f"{kind}-queued.db"
            trial_id = plant(fixture, queued, kind, "queued")
            cases.append(Case("document_worker",
                              ["worker", "--db", f"sqlite:///{queued}", "--experiment", "e",
                               "--idle-exit", "2", "--artifacts", str(folder / f"{kind}-art")],
                              (0,), after=_failed(queued, trial_id), timeout=120))
    return cases


def _failed(path: Path, trial_id: int) -> Callable[[], str | None]:
    def check() -> str | None:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            states = dict(db.execute("SELECT trial_id, state FROM trials WHERE experiment='e'"))
        db.close()
        if states.get(trial_id) != "failed":
            return f"the hostile queued trial {trial_id} is {states.get(trial_id)!r}, not failed"
        if sum(s == "done" for s in states.values()) != len(states) - 1:
            return f"other trials changed: {states}"
        return None
    return check


# --- a killed controller -------------------------------------------------------------------------
def restart_after_kill(tmp: Path) -> list[tuple[str, str]]:
    """SIGKILL a running search controller, start it again at once: it must take over its own
    dead lock and go on (it is then stopped with SIGTERM: exit 143)."""
    db = tmp / "killed.db"
    argv = [sys.executable, "-m", "localrules.cli.main", "search", "--space", "ia",
            "--experiment", "e", "--db", f"sqlite:///{db}", "--workers", "0", "--poll", "0.5"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _has_trials(db):
        time.sleep(0.5)
    first.kill()
    first.wait()
    second = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    time.sleep(8)
    if second.poll() is not None:
        return [("controller_restart", f"exit {second.returncode}: "
                                       f"{second.stderr.read().strip()[-300:]}")]
    second.send_signal(signal.SIGTERM)
    second.communicate(timeout=60)
    return []


def _has_trials(db: Path) -> bool:
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute("SELECT COUNT(*) FROM trials").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-flag", type=int, default=2)
    parser.add_argument("--secrets", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--families", type=lambda text: text.split(","), default=FAMILIES,
                        help=f"comma-separated, of {','.join(FAMILIES)} (default: all)")
    parser.add_argument("--findings", type=Path, help="write every finding here (JSON lines)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rng = random.Random(args.seed)
    random.seed(args.seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        log.info("building the fixture store (a real search's documents)")
        fixture = build_fixture(tmp)
        families = {
            "numeric": lambda: numeric_cases(rng, tmp, fixture, args.per_flag),
            "secret": lambda: secret_cases(rng, tmp, args.secrets),
            "foreign_file": lambda: foreign_cases(tmp),
            "yaml_space": lambda: space_cases(tmp),
            "document": lambda: document_cases(tmp, fixture),
        }
        cases = [case for name in args.families if name in families
                 for case in families[name]()]
        log.info("%d cases", len(cases))
        findings: list[tuple[str, str]] = []
        with ThreadPoolExecutor(args.jobs) as pool:
            for i, found in enumerate(pool.map(lambda c: run_case(c, tmp), cases), start=1):
                findings += found
                if i % 20 == 0:
                    log.info("%d/%d cases, %d findings", i, len(cases), len(findings))
        if "restart" in args.families:
            findings += restart_after_kill(tmp)
    kinds = Counter(kind for kind, _ in findings)
    if args.findings:
        args.findings.write_text("".join(json.dumps({"kind": kind, "detail": detail}) + "\n"
                                         for kind, detail in findings))
    print(json.dumps({
        "benchmark": "adversarial", "seed": args.seed,
        "cases": len(cases) + ("restart" in args.families),
        "families": dict(Counter(c.family for c in cases)),
        "findings": len(findings), "by_kind": dict(kinds),
        "first": [f"{kind}: {detail}" for kind, detail in findings[:12]],
        "seconds": round(time.monotonic() - started, 1)}))


if __name__ == "__main__":
    main()
