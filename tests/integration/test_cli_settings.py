"""A CONVTREE_* variable that holds an unusable value: one line naming it, exit code 14, no traceback."""

import os
import subprocess
import sys

import pytest

from service import exits
from service.config import InvalidSetting, Settings


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"CONVTREE_PORT": "abc"}, "CONVTREE_PORT='abc' is not valid for port: expected `int`, got `str`"),
        ({"CONVTREE_METRICS": "maybe"}, "CONVTREE_METRICS='maybe' is not valid for metrics: expected `bool`, got `str`"),
        ({"CONVTREE_LOG_LEVEL": "loud"}, "CONVTREE_LOG_LEVEL='loud' is not valid for log level: expected one of debug, info, warning, error, critical"),
        ({"CONVTREE_LOG_FORMAT": "xml"}, "CONVTREE_LOG_FORMAT='xml' is not valid for log format: expected one of auto, json, console"),
    ],
)  # fmt: skip
def test_an_invalid_value_names_its_variable(env, line):
    with pytest.raises(InvalidSetting) as raised:
        Settings.from_env(env)
    assert str(raised.value) == line


def test_a_value_that_may_hold_a_secret_is_not_printed():
    with pytest.raises(InvalidSetting) as raised:
        Settings.from_env({"CONVTREE_METRICS_PORT": "x", "CONVTREE_MIGRATE_DATABASE_URL": "postgresql://u:pw@h/d"})
    assert "pw" not in str(raised.value)


@pytest.mark.parametrize("command", [("info",), ("serve",), ("keys", "list"), ("export", "--tenant", "t", "--output", "x")])
def test_every_command_ends_in_one_line_and_exit_code_14(command, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVTREE_") and k != "DATABASE_URL"}
    env |= {"CONVTREE_PORT": "abc", "CONVTREE_DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "service", *command], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=60)  # fmt: skip
    assert result.returncode == exits.INVALID_SETTING == 14
    assert result.stderr == "convtree: CONVTREE_PORT='abc' is not valid for port: expected `int`, got `str`\n"
    assert not (tmp_path / "pgdata").exists()  # refused before anything started


@pytest.mark.parametrize("command", [("info",), ("serve",)])
def test_an_unusable_provider_setting_ends_in_one_line_and_exit_code_14_before_anything_starts(command, tmp_path):
    providers = tmp_path / "providers.toml"
    providers.write_text('[providers.work]\nkind = "openai"\napi_key_env = "CONVTREE_TEST_UNSET_KEY"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVTREE_") and k != "DATABASE_URL"}
    env |= {"CONVTREE_PROVIDERS_FILE": str(providers), "CONVTREE_DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "service", *command], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=60)  # fmt: skip
    assert result.returncode == exits.INVALID_SETTING == 14, result.stderr
    assert result.stderr == (
        f"convtree: CONVTREE_PROVIDERS_FILE='{providers}' is not valid for providers file: "
        "provider 'work': env var CONVTREE_TEST_UNSET_KEY is not set\n"
    )
    assert not (tmp_path / "pgdata").exists()
