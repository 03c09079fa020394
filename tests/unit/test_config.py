"""Configuration: defaults < TOML file < FDS_* environment < command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from fds.config import (
    DEFAULT_TRACT_SIZE,
    ConfigError,
    GatewayConfig,
    MetaserverConfig,
    TractServerConfig,
    load_config,
)


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "fds.toml"
    path.write_text(text)
    return str(path)


def test_defaults() -> None:
    config = load_config(MetaserverConfig, "metaserver", environ={})
    assert config == MetaserverConfig()
    assert config.port == 7000 and config.replicas == 1 and config.seed is None
    assert config.tract_size == DEFAULT_TRACT_SIZE == 8 * 1024 * 1024


def test_each_layer_beats_the_one_before(tmp_path: Path) -> None:
    file = write_toml(tmp_path, """
[metaserver]
port = 7001
replicas = 2
expected_servers = 5
heartbeat_timeout = 2.5
""")
    environ = {"FDS_REPLICAS": "3", "FDS_EXPECTED_SERVERS": "6"}
    overrides = {"expected_servers": 7, "port": None}  # None: flag not given
    config = load_config(MetaserverConfig, "metaserver", file=file, environ=environ, overrides=overrides)
    assert config.host == "127.0.0.1"  # default: nobody set it
    assert config.port == 7001  # file over default (the None override does not count)
    assert config.heartbeat_timeout == 2.5
    assert config.replicas == 3  # environment over file
    assert config.expected_servers == 7  # override over environment and file


def test_environment_alone_and_types(tmp_path: Path) -> None:
    environ = {"FDS_PORT": " 7105 ", "FDS_HEARTBEAT_INTERVAL": "0.25", "FDS_DOMAIN": "rack-2",
               "FDS_IRRELEVANT": "x", "PORT": "1"}
    config = load_config(TractServerConfig, "tractserver", environ=environ)
    assert config.port == 7105 and isinstance(config.port, int)
    assert config.heartbeat_interval == 0.25 and isinstance(config.heartbeat_interval, float)
    assert config.domain == "rack-2"


def test_toml_sections_are_per_role(tmp_path: Path) -> None:
    file = write_toml(tmp_path, """
[metaserver]
port = 7001
[gateway]
port = 7081
max-in-flight = 4
""")
    assert load_config(GatewayConfig, "gateway", file=file, environ={}).port == 7081
    assert load_config(GatewayConfig, "gateway", file=file, environ={}).max_in_flight == 4  # dashes allowed
    assert load_config(MetaserverConfig, "metaserver", file=file, environ={}).port == 7001
    assert load_config(TractServerConfig, "tractserver", file=file, environ={}).port == 7100  # no section


def test_optional_int() -> None:
    assert load_config(MetaserverConfig, "metaserver", environ={"FDS_SEED": "42"}).seed == 42
    assert load_config(MetaserverConfig, "metaserver", environ={"FDS_SEED": ""}).seed is None


@pytest.mark.parametrize(("name", "value"), [("PORT", "http"), ("PORT", "7.5"), ("PORT", ""),
                                              ("HEARTBEAT_TIMEOUT", "soon"), ("SEED", "x1")])
def test_bad_number_in_environment_names_the_setting(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(MetaserverConfig, "metaserver", environ={f"FDS_{name}": value})
    assert repr(name.lower()) in str(info.value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", ['"lots"', "7.5", "true", "[1, 2]"])
def test_bad_number_in_file_names_the_setting(tmp_path: Path, value: str) -> None:
    file = write_toml(tmp_path, f"[tractserver]\nio_threads = {value}\n")
    with pytest.raises(ConfigError, match="'io_threads' must be a number"):
        load_config(TractServerConfig, "tractserver", file=file, environ={})


def test_unknown_toml_key_raises_and_lists_known(tmp_path: Path) -> None:
    file = write_toml(tmp_path, "[metaserver]\nport = 7001\nreplica = 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(MetaserverConfig, "metaserver", file=file, environ={})
    message = str(info.value)
    assert "'replica'" in message and "[metaserver]" in message and file in message
    assert "replicas" in message  # the known settings are listed


def test_missing_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(MetaserverConfig, "metaserver", file=str(tmp_path / "absent.toml"), environ={})
    bad = write_toml(tmp_path, "[metaserver\nport = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(MetaserverConfig, "metaserver", file=bad, environ={})


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FDS_MAX_IN_FLIGHT", "3")
    assert load_config(GatewayConfig, "gateway").max_in_flight == 3
