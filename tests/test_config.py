"""Settings come from the environment, converted and checked once."""

from pathlib import Path

import msgspec
import pytest

from service.config import Settings


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
