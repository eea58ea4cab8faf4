"""Secrets and foreign files: no password a database URL can carry is ever printed (URL forms,
driver errors, log lines, a store's repr), and no command gives a SQLite file that is not a
localrules store (or an empty one, for readers) tables or a new journal mode."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from fuzzing import URL_PASSWORDS
from helpers import free_port
from hypothesis import given
from hypothesis import strategies as st

from localrules.cli.main import main
from localrules.store.urls import open_store, redact, scrub, url_secrets

NO_NEWLINE = URL_PASSWORDS.filter(lambda pw: "\n" not in pw and "\r" not in pw)
USERS = st.sampled_from(["u", "alice", "my user", "ünï", ""])


# --- redaction: every form of every password -----------------------------------------------------
@pytest.mark.fuzz
@given(password=NO_NEWLINE, user=USERS, encode=st.booleans(),
       tail=st.sampled_from(["h/db", "h:27017/db?authSource=admin", "h1,h2:27018/db", "[::1]/db"]))
def test_redact_masks_any_password_raw_or_encoded(password, user, encode, tail):
    written = quote(password, safe="") if encode else password
    url = f"mongodb://{user}:{written}@{tail}"
    assert redact(url) == f"mongodb://{user}:***@{tail}"
    message = f"cannot reach {url}: connection refused"
    assert redact(message) == f"cannot reach mongodb://{user}:***@{tail}: connection refused"


@pytest.mark.fuzz
@given(password=NO_NEWLINE.filter(lambda pw: len(pw) >= 4))
def test_scrub_masks_a_password_quoted_outside_the_url(password):
    url = f"mongodb://u:{quote(password, safe='')}@h/db"
    secrets = url_secrets(url)
    for shown in (password, quote(password, safe=""), quote(password)):
        assert password not in scrub(f"auth failed for password {shown!s}", secrets)


@pytest.mark.parametrize("option", ["tlsCertificateKeyFilePassword", "authMechanismProperties"])
def test_secret_options_are_masked(option):
    url = f"mongodb://h/db?tls=true&{option}=AWS_SESSION_TOKEN:tok-s3cret&w=1"
    assert "tok-s3cret" not in redact(url)
    assert redact(url).endswith(f"{option}=***&w=1")
    assert "tok-s3cret" not in scrub("driver said: tok-s3cret", url_secrets(url))


def test_short_passwords_are_masked_in_url_form():
    assert redact("mongodb://u:a@h/db") == "mongodb://u:***@h/db"
    assert redact("mongodb://u:@h/db") == "mongodb://u:***@h/db"


def test_a_stores_repr_holds_no_password(mongodb_server_uri, tmp_path):
    from localrules.store.mongo import MongoStore

    url = f"mongodb://alice:s3cr%40t-pw@127.0.0.1:{free_port()}/lr"
    store = MongoStore.__new__(MongoStore)
    store.url = redact(url)
    assert "s3cr" not in repr(store) and "alice:***@" in repr(store)
    with open_store(f"sqlite:///{tmp_path / 's.db'}") as sqlite_store:
        assert repr(sqlite_store) == f"SQLiteStore('sqlite:///{tmp_path / 's.db'}')"


@pytest.mark.parametrize("password", ["p@ss word", "p%40ss w%2Frd", "ünï:c0de", "x" * 60])
def test_the_cli_prints_no_password_on_a_database_error(password):
    """An unreachable server, through the real CLI with -v (every log line too): exit 1 and the
    password in none of its forms."""
    url = (f"mongodb://alice:{password}@127.0.0.1:{free_port()}/lr"
           "?serverSelectionTimeoutMS=300&connectTimeoutMS=300")
    for argv in (["trials", "--db", url, "--experiment", "e"],
                 ["experiments", "--db", url]):
        result = subprocess.run([sys.executable, "-m", "localrules.cli.main", "-v", *argv],
                                capture_output=True, text=True, timeout=120)
        shown = result.stdout + result.stderr
        assert result.returncode in (1, 2), shown
        assert "Traceback" not in shown
        for form in url_secrets(url):
            assert form not in shown, (form, shown)
        assert "alice:***@" in shown


def test_log_lines_are_scrubbed_whoever_logs_the_url(caplog, tmp_path):
    """A library logger quoting the URL raw (as a third-party driver might) is scrubbed by the
    CLI's filter."""
    import logging

    from localrules.cli.main import ScrubSecrets

    url = "mongodb://u:hunter2-pw@h/db"
    record = logging.LogRecord("driver", logging.INFO, __file__, 1, "dialing %s (pw %s)",
                               (url, "hunter2-pw"), None)
    assert ScrubSecrets(url_secrets(url)).filter(record)
    assert record.getMessage() == "dialing mongodb://u:***@h/db (pw ***)"


# --- foreign SQLite files ------------------------------------------------------------------------
def _foreign_files(directory: Path) -> dict[str, Path]:
    """An empty file, another program's database (rollback journal and WAL), and text."""
    files = {name: directory / f"{name}.db" for name in ("empty", "foreign", "foreign_wal",
                                                          "text")}
    files["empty"].touch()
    for name, mode in (("foreign", "delete"), ("foreign_wal", "wal")):
        with sqlite3.connect(files[name]) as db:
            db.execute(f"PRAGMA journal_mode={mode}")
            db.execute("CREATE TABLE notes (x)")
            db.execute("INSERT INTO notes VALUES ('keep me')")
    files["text"].write_text("not a database at all\n" * 50)
    return files


def _state(path: Path) -> tuple[str, tuple[str, ...]]:
    """The file's bytes and the side files next to it."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest, tuple(sorted(p.name for p in path.parent.glob(path.name + "-*")))


READERS = [["trials", "--experiment", "e"], ["experiments"],
           ["report", "importance", "--experiment", "e"],
           ["report", "progress", "--experiment", "e"]]
WRITERS = [["worker", "--experiment", "e", "--max-trials", "1", "--idle-exit", "1"],
           ["search", "--space", "ia", "--experiment", "e", "--max-trials", "1"]]


@pytest.mark.parametrize("argv", READERS, ids=lambda a: " ".join(a[:2]))
def test_readers_refuse_foreign_and_empty_files_and_change_nothing(tmp_path, capsys, argv):
    for name, path in _foreign_files(tmp_path).items():
        before = _state(path)
        assert main([*argv, "--db", f"sqlite:///{path}", "--out", str(tmp_path / "o")]
                    if argv[0] == "report" else [*argv, "--db", f"sqlite:///{path}"]) == 2, name
        err = capsys.readouterr().err
        assert "not a localrules store" in err or "not a database" in err, (name, err)
        assert _state(path) == before, name
        if name.startswith("foreign"):
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master")]
                mode = db.execute("PRAGMA journal_mode").fetchone()[0]
            assert tables == ["notes"] and mode == ("wal" if name.endswith("wal") else "delete")


@pytest.mark.parametrize("argv", WRITERS, ids=lambda a: a[0])
def test_writers_refuse_another_programs_database(tmp_path, capsys, argv):
    files = _foreign_files(tmp_path)
    for name in ("foreign", "foreign_wal", "text"):
        before = _state(files[name])
        assert main([*argv, "--db", f"sqlite:///{files[name]}"]) == 2, name
        err = capsys.readouterr().err
        assert "not a localrules store" in err or "not a database" in err, (name, err)
        assert _state(files[name]) == before, name


def test_an_empty_file_becomes_a_store_for_a_writer(tmp_path):
    path = _foreign_files(tmp_path)["empty"]
    with open_store(f"sqlite:///{path}") as store:
        assert store.list_experiments() == []


def test_usage_errors_quote_no_password(capsys):
    assert main(["trials", "--experiment", "e", "--dbb", "mongodb://u:hunter2-pw@h/db"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err and "hunter2" not in err and "u:***@h" in err
