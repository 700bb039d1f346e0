"""The schema the migrations build matches the models; logs and errors never carry a secret."""

import json
import logging

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

from models import Database
from models.migrate import upgrade
from worker.ops.logs import configure_logging, redact
from worker.receiver.devsecret import dev_webhook_secret, webhook_secrets
from worker.settings import Settings


@pytest.fixture(autouse=True)
def _logging_put_back():
    """Some tests here configure logging onto pytest's captured stderr; give the next test pytest's own."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_migrations_build_exactly_the_schema_the_models_describe(tmp_path, _shared_database):
    if _shared_database is None:
        database = Database(f"sqlite:///{tmp_path}/migrated.db")
    else:  # on PostgreSQL: migrate the shared database from empty, then give it back as it was
        database = _shared_database
        with database.engine.begin() as connection:
            SQLModel.metadata.drop_all(connection)
    try:
        upgrade(database)
        upgrade(database)  # running it again on every deploy is safe
        with database.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    finally:
        if _shared_database is None:
            database.dispose()
        else:
            with database.engine.begin() as connection:
                SQLModel.metadata.drop_all(connection)
                connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
            database.create_all()
    assert differences == []


def test_a_sqlite_file_database_runs_in_wal_mode(tmp_path):
    database = Database(f"sqlite:///{tmp_path}/wal.db")
    with database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    database.dispose()


def test_stripe_keys_and_webhook_secrets_are_redacted_wherever_they_appear():
    text = "key sk_live_51Habc123XYZ and rk_test_9abc and whsec_abcDEF123= in one line"
    assert redact(text) == "key [redacted] and [redacted] and [redacted] in one line"


def test_configured_secrets_of_any_shape_are_scrubbed_from_json_logs(capsys):
    configure_logging("INFO", "json", secrets=["my-custom-secret-value"])
    try:
        raise RuntimeError("auth failed for my-custom-secret-value")
    except RuntimeError:
        logging.getLogger("test").exception("with %s", "sk_test_leakyleaky")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert "my-custom-secret-value" not in line and "sk_test_leakyleaky" not in line
    assert record["msg"] == "with [redacted]"
    assert "auth failed for [redacted]" in record["exc"]


def test_settings_never_show_secrets_in_their_repr():
    settings = Settings(stripe_api_key="sk_test_hiddenhidden", stripe_webhook_secret="whsec_a,whsec_b")
    assert "sk_test_hiddenhidden" not in repr(settings) and "whsec_a" not in repr(settings)
    assert settings.webhook_secrets() == ["whsec_a", "whsec_b"]


def test_dev_mode_generates_one_private_secret_and_keeps_it(tmp_path):
    path = tmp_path / "secret"
    first = dev_webhook_secret(path)
    assert first.startswith("whsec_dev") and dev_webhook_secret(path) == first
    assert path.stat().st_mode & 0o777 == 0o600


def test_outside_dev_mode_no_secret_means_none_and_the_receiver_refuses_to_start():
    assert webhook_secrets(Settings(dev_mode=False)) == []


def test_request_urls_which_can_carry_a_token_are_not_logged_by_the_http_client(capsys):
    import httpx
    import respx

    configure_logging("INFO", "json", secrets=[])
    with respx.mock:
        respx.post("http://127.0.0.1:9/webhooks/funnel/token-in-the-path-123").mock(
            return_value=httpx.Response(200)
        )
        httpx.post("http://127.0.0.1:9/webhooks/funnel/token-in-the-path-123")
    assert "token-in-the-path-123" not in capsys.readouterr().err
