"""Settings come from the environment, converted and checked once."""

from pathlib import Path

import msgspec
import pytest

from service.config import InvalidSetting, Providers, ProviderSettings, Secret, Settings
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


# --- Model providers ---------------------------------------------------------------------------

KEY = "sk-live-DO-NOT-LEAK-31"


def by_name(settings: Settings) -> dict[str, ProviderSettings]:
    return {p.name: p for p in settings.providers.providers}


def test_without_provider_variables_echo_alone_is_configured_and_the_default():
    assert Settings.from_env({}).providers == Settings().providers == Providers()
    assert [p.name for p in Providers().providers] == ["echo"] and Providers().default_provider == "echo"


def test_provider_variables_configure_openai_and_ollama():
    settings = Settings.from_env(
        {
            "CONVTREE_OPENAI_BASE_URL": "http://vllm.test/v1",
            "CONVTREE_OPENAI_API_KEY": KEY,
            "CONVTREE_OPENAI_MODEL": "qwen",
            "CONVTREE_OPENAI_MODELS": "qwen, mistral,",
            "CONVTREE_OLLAMA_BASE_URL": "http://ollama.test:11434",
            "CONVTREE_DEFAULT_PROVIDER": "ollama",
            "CONVTREE_DEFAULT_MODEL": "llama3.2",
        }
    )
    openai = by_name(settings)["openai"]
    assert (openai.kind, openai.base_url, openai.default_model, openai.models) == (
        "openai", "http://vllm.test/v1", "qwen", ("qwen", "mistral"),
    )  # fmt: skip
    assert openai.api_key == Secret(KEY)
    assert by_name(settings)["ollama"].base_url == "http://ollama.test:11434"
    assert [p.name for p in settings.providers.providers] == ["openai", "ollama", "echo"]
    assert (settings.providers.default_provider, settings.providers.default_model) == ("ollama", "llama3.2")


def test_an_empty_models_variable_configures_the_provider_with_no_list_and_other_empty_ones_are_unset():
    alone = Settings.from_env({"CONVTREE_OLLAMA_MODELS": "", "CONVTREE_OPENAI_MODEL": "", "CONVTREE_OPENAI_API_KEY": ""})
    assert list(by_name(alone)) == ["ollama", "echo"]  # only MODELS counts when empty
    assert by_name(alone)["ollama"].models == () and alone.providers.default_provider == "ollama"


def test_an_empty_models_variable_lifts_the_files_list():
    text = '[providers.openai]\nkind = "openai"\nmodels = ["a", "b"]\n'
    assert Providers.parse({}, text).providers[0].models == ("a", "b")
    assert Providers.parse({"CONVTREE_OPENAI_MODELS": ""}, text).providers[0].models == ()
    assert Providers.parse({"CONVTREE_OPENAI_MODELS": "c"}, text).providers[0].models == ("c",)


def test_the_providers_file_and_the_key_variable_it_names_are_read_once_at_start(tmp_path):
    path = tmp_path / "providers.toml"
    path.write_text('[providers.work]\nkind = "openai"\napi_key_env = "WORK_KEY"\ndefault_model = "m"\n')
    env = {"CONVTREE_PROVIDERS_FILE": str(path), "WORK_KEY": KEY}
    settings = Settings.from_env(env)
    path.write_text("garbage [")
    env["WORK_KEY"] = "sk-later"
    work = by_name(settings)["work"]
    assert work.api_key == Secret(KEY) and work.default_model == "m"
    assert settings.providers.default_provider == "work"  # the only one besides echo


def test_a_variable_key_replaces_the_key_variable_the_file_names():
    text = '[providers.openai]\nkind = "openai"\napi_key_env = "UNSET_KEY"\n'
    assert Providers.parse({"CONVTREE_OPENAI_API_KEY": KEY}, text).providers[0].api_key == Secret(KEY)


def test_file_timeouts_and_retries_are_kept_as_given():
    text = '[providers.x]\nkind = "ollama"\ntimeouts = { read = 20, max_connections = 4 }\nretry_attempts = 5\n'
    x = Providers.parse({}, text).providers[0]
    assert (x.timeouts.read, x.timeouts.connect, x.timeouts.max_connections, x.retry_attempts) == (20.0, None, 4, 5)


def test_no_key_shows_in_the_settings_repr():
    settings = Settings.from_env({"CONVTREE_OPENAI_API_KEY": KEY})
    assert KEY not in repr(settings) and KEY not in str(settings.providers)
    assert "Secret('***')" in repr(settings)


@pytest.mark.parametrize(
    ("env", "file", "line"),
    [
        ({"CONVTREE_DEFAULT_PROVIDER": "ghost"}, None,
         "CONVTREE_DEFAULT_PROVIDER='ghost' is not valid for default provider: no provider named 'ghost' is configured"),
        ({"CONVTREE_OPENAI_BASE_URL": "vllm.test/v1?key=secret"}, None,
         "CONVTREE_OPENAI_BASE_URL=… is not valid for openai base url: expected an http:// or https:// URL"),
        ({}, 'default_provider = "ghost"\n',
         "CONVTREE_PROVIDERS_FILE='{path}' is not valid for providers file: default provider 'ghost' is not configured"),
        ({}, '[providers.x]\nkind = "openai"\napi_key_env = "MISSING_KEY"\n',
         "CONVTREE_PROVIDERS_FILE='{path}' is not valid for providers file: provider 'x': env var MISSING_KEY is not set"),
        ({"MISSING_KEY": ""}, '[providers.x]\nkind = "openai"\napi_key_env = "MISSING_KEY"\n',
         "CONVTREE_PROVIDERS_FILE='{path}' is not valid for providers file: provider 'x': env var MISSING_KEY is not set"),
        ({}, '[providers.x]\nkind = "openai"\napi_key = "k"\napi_key_env = "K"\n',
         "CONVTREE_PROVIDERS_FILE='{path}' is not valid for providers file: provider 'x': give api_key or api_key_env, not both"),
        ({}, '[providers.x]\nkind = "openai"\nbase_url = "ftp://x"\n',
         "CONVTREE_PROVIDERS_FILE='{path}' is not valid for providers file: provider 'x': base_url: expected an http:// or https:// URL"),
        ({}, '[providers.x]\nkind = "gemini"\n',
         "CONVTREE_PROVIDERS_FILE='{path}' is not valid for providers file: Invalid enum value 'gemini' - at `$.providers[...].kind`"),
        ({}, '[providers.x]\nkind = "openai"\nbase_ur = "typo"\n',
         "CONVTREE_PROVIDERS_FILE='{path}' is not valid for providers file: Object contains unknown field `base_ur` - at `$.providers[...]`"),
        ({}, "not toml [",
         "CONVTREE_PROVIDERS_FILE='{path}' is not valid for providers file: not TOML: Expected '=' after a key in a key/value pair (at line 1, column 5)"),
    ],
)  # fmt: skip
def test_an_unusable_provider_setting_is_one_line_naming_its_variable(env, file, line, tmp_path):
    path = tmp_path / "providers.toml"
    if file is not None:
        path.write_text(file)
        env = {**env, "CONVTREE_PROVIDERS_FILE": str(path)}
    with pytest.raises(InvalidSetting) as raised:
        Settings.from_env(env)
    assert str(raised.value) == line.format(path=path)


def test_an_unreadable_providers_file_is_one_line(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(InvalidSetting) as raised:
        Settings.from_env({"CONVTREE_PROVIDERS_FILE": str(missing)})
    assert str(raised.value) == (
        f"CONVTREE_PROVIDERS_FILE='{missing}' is not valid for providers file: cannot read it: No such file or directory"
    )


def test_a_bad_key_in_the_file_is_not_printed(tmp_path):
    path = tmp_path / "providers.json"
    path.write_text('{"providers": {"x": {"kind": "openai", "api_key": ["%s"]}}}' % KEY)
    with pytest.raises(InvalidSetting) as raised:
        Settings.from_env({"CONVTREE_PROVIDERS_FILE": str(path)})
    assert KEY not in str(raised.value) and "$.providers[...].api_key" in str(raised.value)
