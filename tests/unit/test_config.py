"""Settings come from the environment, converted and checked once."""

from pathlib import Path

import msgspec
import pytest

from service.config import Settings
from service.store.pool import Limits


def test_environment_overrides_defaults():
    settings = Settings.from_env(
        {"DATABASE_URL": "postgresql://db/x", "CONVTREE_PORT": "9000", "CONVTREE_DATA_DIR": "/var/lib/convtree"}
    )
    assert settings.database_url == "postgresql://db/x"
    assert settings.port == 9000 and settings.data_dir == Path("/var/lib/convtree")


def test_no_database_url_means_the_embedded_server():
    assert Settings.from_env({}).database_url is None


def test_a_malformed_value_is_a_clear_error():
    with pytest.raises(msgspec.ValidationError, match="port"):
        Settings.from_env({"CONVTREE_PORT": "eighty"})


def test_database_waits_are_bounded_by_default_and_set_from_the_environment():
    defaults = Settings.from_env({})
    assert (defaults.pool_acquire_timeout, defaults.lock_timeout, defaults.statement_timeout) == (5.0, 5.0, 30.0)
    settings = Settings.from_env({"CONVTREE_LOCK_TIMEOUT": "1.5", "CONVTREE_STATEMENT_TIMEOUT": "0"})
    limits = Limits(lock_timeout=settings.lock_timeout, statement_timeout=settings.statement_timeout)
    assert limits.session_settings() == {
        "lock_timeout": "1500ms",
        "statement_timeout": "0",  # no limit, as PostgreSQL reads it
        "idle_in_transaction_session_timeout": "60000ms",
    }


def test_request_limits_have_defaults_and_come_from_the_environment():
    defaults = Settings.from_env({})
    assert defaults.request_max_header_bytes == 32 * 1024
    assert (defaults.request_header_timeout_seconds, defaults.request_body_timeout_seconds) == (10.0, 60.0)
    assert defaults.keep_alive_timeout_seconds == 5
    settings = Settings.from_env(
        {
            "CONVTREE_REQUEST_MAX_HEADER_BYTES": "8192",
            "CONVTREE_REQUEST_HEADER_TIMEOUT_SECONDS": "2.5",
            "CONVTREE_REQUEST_BODY_TIMEOUT_SECONDS": "30",
            "CONVTREE_KEEP_ALIVE_TIMEOUT_SECONDS": "2",
        }
    )
    assert settings.request_max_header_bytes == 8192 and settings.request_header_timeout_seconds == 2.5
    assert settings.request_body_timeout_seconds == 30.0 and settings.keep_alive_timeout_seconds == 2
