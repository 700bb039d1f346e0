"""Files that hold customer emails, payloads or secrets are the owner's alone (0600, folders 0700).

Checked with `stat` on real files made by the real code paths, under several process umasks: a
permissive one (000), the usual one (022) and one that would even take the owner's own rights (277).
"""

import logging
import os
import sqlite3
import stat

import pytest
from sqlmodel import select

from models import Database, Event
from worker.dashboard.app import dashboard_secret
from worker.ops.exports import write_sales_csv
from worker.receiver.devsecret import dev_webhook_secret


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o000, 0o277], ids=lambda m: f"umask{m:03o}")
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def tightened(caplog, path) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if str(path) in r.getMessage() and "0600" in r.getMessage()
    ]


def test_a_new_sqlite_database_and_its_wal_and_shm_files_are_0600_in_a_0700_folder(tmp_path, umask):
    path = tmp_path / "var" / "worker.db"
    db = Database(f"sqlite:///{path}")
    try:
        db.create_all()
        with db.session() as session:
            session.add(Event(id="evt_mode", type="charge.succeeded", payload='{"email": "a@b.example"}'))
        # The pooled connection is still open, so SQLite's -wal and -shm files are there to see.
        files = [path, path.with_name("worker.db-wal"), path.with_name("worker.db-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: oct(mode(f)) for f in files} == {f.name: "0o600" for f in files}
        assert oct(mode(path.parent)) == "0o700"
        with db.session() as session:
            assert session.exec(select(Event.id)).all() == ["evt_mode"]
    finally:
        db.dispose()


def test_only_the_folders_we_create_are_made_0700(tmp_path, umask):
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "data" / "nested" / "worker.db"
    db = Database(f"sqlite:///{path}")
    try:
        db.ping()
    finally:
        db.dispose()
    assert oct(mode(tmp_path)) == "0o755"  # not ours: left as it was
    assert (oct(mode(tmp_path / "data")), oct(mode(path.parent))) == ("0o700", "0o700")
    assert oct(mode(path)) == "0o600"


def test_an_existing_world_readable_database_is_tightened_when_opened_and_says_so(tmp_path, caplog):
    path = tmp_path / "worker.db"
    previous = os.umask(0o022)
    try:
        # An older version (or sqlite3 by hand) left the database and, after a crash, its WAL at 0644.
        other = sqlite3.connect(path)
        other.execute("PRAGMA journal_mode=WAL")
        other.execute("CREATE TABLE t (x)")
        other.execute("INSERT INTO t VALUES ('someone@example.com')")
        other.commit()
        loose = [path, path.with_name("worker.db-wal"), path.with_name("worker.db-shm")]
        assert [mode(f) for f in loose] == [0o644, 0o644, 0o644]
        with caplog.at_level(logging.INFO):
            db = Database(f"sqlite:///{path}")
            db.ping()
        assert [oct(mode(f)) for f in loose] == ["0o600"] * 3
        for f in loose:
            assert tightened(caplog, f), f"no log line says {f} was tightened"
        db.dispose()
        other.close()
    finally:
        os.umask(previous)


def test_an_in_memory_database_touches_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = Database("sqlite://")
    db.ping()
    db.dispose()
    assert list(tmp_path.iterdir()) == []


def test_the_csv_export_is_0600(tmp_path, umask):
    path = tmp_path / "sales.csv"
    write_sales_csv(path, [{"charge_id": "ch_1", "customer_email": "buyer@example.com", "amount": 100}])
    assert oct(mode(path)) == "0o600"
    assert "buyer@example.com" in path.read_text(encoding="utf-8")


def test_overwriting_a_world_readable_csv_export_tightens_it_and_says_so(tmp_path, caplog):
    path = tmp_path / "sales.csv"
    path.write_text("old,export\n")
    os.chmod(path, 0o644)
    with caplog.at_level(logging.INFO):
        write_sales_csv(path, [{"charge_id": "ch_1", "customer_email": "buyer@example.com", "amount": 100}])
    assert oct(mode(path)) == "0o600"
    assert "old,export" not in path.read_text(encoding="utf-8")
    assert tightened(caplog, path)


def test_the_dev_webhook_secret_is_0600_in_a_0700_folder(tmp_path, umask):
    path = tmp_path / "var" / "dev-webhook-secret"
    secret = dev_webhook_secret(path)
    assert secret.startswith("whsec_")
    assert (oct(mode(path)), oct(mode(path.parent))) == ("0o600", "0o700")
    assert dev_webhook_secret(path) == secret


def test_a_world_readable_dev_webhook_secret_is_tightened_when_read_and_says_so(tmp_path, caplog):
    path = tmp_path / "dev-webhook-secret"
    path.write_text("whsec_devolder\n")
    os.chmod(path, 0o644)
    with caplog.at_level(logging.INFO):
        assert dev_webhook_secret(path) == "whsec_devolder"
    assert oct(mode(path)) == "0o600"
    assert tightened(caplog, path)


def test_the_generated_dashboard_session_key_is_0600_in_a_0700_folder(tmp_path, umask):
    path = tmp_path / "var" / "dashboard-secret"
    key = dashboard_secret(path)
    assert len(key) >= 48
    assert (oct(mode(path)), oct(mode(path.parent))) == ("0o600", "0o700")
    assert dashboard_secret(path) == key  # every web process of the host signs with the same key
