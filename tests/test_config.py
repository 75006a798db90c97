"""Settings: one table, flags over environment over defaults, bad values named.

These call ``gateway.config.load`` directly with an explicit environment, so
the process environment of the test run cannot leak into the results.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from gateway import config
from gateway.config import OPTIONS, Config, ConfigError, load

BY_NAME = {o.name: o for o in OPTIONS}


def _load(*argv: str, **env: str) -> Config:
    return load(list(argv), env)


# ---------------------------------------------------------------------------
# defaults and the table
# ---------------------------------------------------------------------------
def test_defaults_equal_the_dataclass_defaults() -> None:
    """Nothing set must give exactly ``Config()``: the table and the class agree."""
    assert _load() == Config()


def test_defaults_are_the_go_gateways() -> None:
    """The documented defaults, so a drop-in replacement behaves the same."""
    cfg = _load()
    assert cfg.cuebot_endpoint == "localhost:8443"
    assert cfg.port == 8448
    assert cfg.descriptor_source == "bundled" and cfg.reflection is False
    assert cfg.grpc_timeout == 30.0
    assert cfg.grpc_max_recv_msg_mb == 256
    assert cfg.max_request_bytes == 8 * 1024 * 1024
    assert cfg.exclude_services == ("rqd.*", "report.*", "grpc.reflection.*")
    assert cfg.use_tls is False


def test_every_config_field_has_exactly_one_option() -> None:
    names = [o.name for o in OPTIONS]
    assert len(names) == len(set(names))
    assert set(names) == {f.name for f in fields(Config)}


def test_option_defaults_match_field_defaults() -> None:
    """The table's defaults are what a bare ``Config()`` holds (source: implied, else bundled)."""
    base = Config()
    for o in OPTIONS:
        if o.name == "descriptor_source":
            assert o.default is None and base.descriptor_source == "bundled"
        else:
            assert o.default == getattr(base, o.name), o.name


def test_env_vars_and_flags_are_unique() -> None:
    envs = [o.env for o in OPTIONS if o.env]
    flags = [o.flag for o in OPTIONS if o.flag]
    assert len(envs) == len(set(envs))
    assert len(flags) == len(set(flags))
    # every setting has a flag, except secrets, which a flag would show in `ps`
    assert {o.name for o in OPTIONS if not o.flag} == {"jwt_secret"}


def test_help_lists_every_env_var_and_flag() -> None:
    text = config.parser().format_help()
    for o in OPTIONS:
        if o.env:
            assert o.env in text, o.env
        if o.flag:
            assert o.flag in text, o.flag


def test_help_names_the_environment_only_secret() -> None:
    """JWT_SECRET has no flag (it would show in `ps`); --help must still say it exists."""
    text = config.parser().format_help()
    epilog = text[text.index("Environment only"):]
    assert "JWT_SECRET: HMAC secret that signs client tokens" in epilog
    assert "JWT_SECRET_FILE (--jwt-secret-file)" in epilog and "--dev --no-auth" in epilog
    assert "JWT_SECRET_FILE" in text[text.index("--jwt-secret-file PATH"):]


def test_help_states_each_default_once() -> None:
    """"(default: all) ... default none" said two things; each option says one, in words."""
    actions = {a.dest: a.help for a in config.parser()._actions}
    for o in OPTIONS:
        if o.flag is None:
            continue
        text = actions[o.name]
        assert text.count("default") <= 1, text
        assert "default none" not in text and "(default:" not in text, text
    assert actions["services"].endswith("(env SERVICES; default all)")
    assert actions["max_request_bytes"].endswith("default 8MiB)")
    assert actions["grpc_timeout"].endswith("default 30)")


# ---------------------------------------------------------------------------
# precedence: flag > env > default
# ---------------------------------------------------------------------------
PRECEDENCE = [
    # field, flag value, env value, parsed flag value, parsed env value
    ("port", "9001", "9002", 9001, 9002),
    ("host", "127.0.0.1", "::1", "127.0.0.1", "::1"),
    ("cuebot_endpoint", "a:1", "b:2", "a:1", "b:2"),
    ("grpc_timeout", "500ms", "2m", 0.5, 120.0),
    ("grpc_max_recv_msg_mb", "4", "16", 4, 16),
    ("max_request_bytes", "1KiB", "2k", 1024, 2048),
    ("log_level", "debug", "WARN", "debug", "warning"),
    ("services", "show.*", "job.*,host.*", ("show.*",), ("job.*", "host.*")),
    ("exclude_services", "rqd.*", "", ("rqd.*",), ()),
    ("cuebot_tls_server_name", "flag.example", "env.example", "flag.example", "env.example"),
]


@pytest.mark.parametrize("name,flag_value,env_value,from_flag,from_env", PRECEDENCE,
                         ids=[p[0] for p in PRECEDENCE])
def test_flag_beats_env_beats_default(name: str, flag_value: str, env_value: str,
                                      from_flag: Any, from_env: Any) -> None:
    o = BY_NAME[name]
    assert o.env is not None and o.flag is not None
    default = getattr(Config(), name)
    assert from_flag != default and from_env != default, "pick values unlike the default"
    assert getattr(_load(), name) == default
    assert getattr(_load(**{o.env: env_value}), name) == from_env
    assert getattr(_load(o.flag, flag_value), name) == from_flag
    assert getattr(_load(o.flag, flag_value, **{o.env: env_value}), name) == from_flag


def test_switch_flag_beats_env() -> None:
    """``--cuebot-tls`` wins over ``CUEBOT_TLS=false``."""
    assert _load(CUEBOT_TLS="false").cuebot_tls is False
    assert _load(CUEBOT_TLS="yes").cuebot_tls is True
    assert _load("--cuebot-tls", CUEBOT_TLS="false").cuebot_tls is True


def test_unrelated_env_vars_are_ignored() -> None:
    """Only the table's variables count (``--reflection`` has none on purpose)."""
    assert _load(REFLECTION="true", PORT="1", HOST="x") == Config()


# ---------------------------------------------------------------------------
# bad values name the variable or flag
# ---------------------------------------------------------------------------
BAD = [
    ("port", "abc"),
    ("port", "70000"),
    ("port", "-1"),
    ("grpc_timeout", "soon"),
    ("grpc_timeout", "0"),
    ("grpc_timeout", "-5s"),
    ("max_request_bytes", "-1"),
    ("max_request_bytes", "8XB"),
    ("max_request_bytes", "0"),
    ("grpc_max_recv_msg_mb", "0"),
    ("grpc_max_recv_msg_mb", "4096"),
    ("log_level", "loud"),
    ("cuebot_endpoint", "http://x:1"),
    ("cuebot_endpoint", ""),
    ("cuebot_endpoint", "a b:1"),
    ("descriptor_source", "ftp"),
    ("descriptor_set", ""),
    ("cuebot_tls", "maybe"),
]


@pytest.mark.parametrize("name,value", BAD, ids=[f"{n}={v!r}" for n, v in BAD])
def test_bad_env_value_names_the_variable(name: str, value: str) -> None:
    o = BY_NAME[name]
    assert o.env is not None
    with pytest.raises(ConfigError) as e:
        _load(**{o.env: value})
    msg = str(e.value)
    assert msg.startswith(f"{o.env}: "), msg
    assert "\n" not in msg


@pytest.mark.parametrize("name,value", [b for b in BAD if b[0] != "cuebot_tls"],
                         ids=[f"{n}={v!r}" for n, v in BAD if n != "cuebot_tls"])
def test_bad_flag_value_names_the_flag(name: str, value: str) -> None:
    o = BY_NAME[name]
    assert o.flag is not None
    with pytest.raises(ConfigError) as e:
        _load(f"{o.flag}={value}")
    msg = str(e.value)
    assert msg.startswith(f"{o.flag}: "), msg
    assert "\n" not in msg


@pytest.mark.parametrize("argv,named", [
    (["--port"], "--port"),
    (["--no-such-flag"], "--no-such-flag"),
    (["--port", "1", "stray"], "stray"),
])
def test_malformed_command_line_is_a_config_error(argv: list[str], named: str) -> None:
    """Not argparse's usage dump and SystemExit: one ConfigError line, like bad values."""
    with pytest.raises(ConfigError) as e:
        load(argv, {})
    assert named in str(e.value) and "\n" not in str(e.value)


def test_bad_env_value_is_not_reported_when_a_flag_overrides_it() -> None:
    """The flag wins, so the variable's value is never looked at."""
    assert _load("--port", "1234", REST_PORT="abc").port == 1234


def test_error_quotes_the_bad_value() -> None:
    with pytest.raises(ConfigError, match="'soon'"):
        _load(GRPC_TIMEOUT="soon")


# ---------------------------------------------------------------------------
# units
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("text,seconds", [
    ("500ms", 0.5), ("2m", 120.0), ("30", 30.0), ("30s", 30.0), ("1.5", 1.5),
    ("1h", 3600.0), (" 10s ", 10.0), (".25s", 0.25),
])
def test_durations(text: str, seconds: float) -> None:
    assert _load(GRPC_TIMEOUT=text).grpc_timeout == pytest.approx(seconds)
    assert _load("--grpc-timeout", text).grpc_timeout == pytest.approx(seconds)


@pytest.mark.parametrize("text,size", [
    ("512KiB", 512 * 1024), ("8MiB", 8 * 1024**2), ("1g", 1024**3), ("100", 100),
    ("2kb", 2048), ("3MB", 3 * 1024**2), ("1GiB", 1024**3), ("4 K", 4096),
])
def test_sizes(text: str, size: int) -> None:
    assert _load(MAX_REQUEST_BYTES=text).max_request_bytes == size


@pytest.mark.parametrize("text,value", [
    ("1", True), ("true", True), ("YES", True), ("on", True),
    ("0", False), ("false", False), ("No", False), ("off", False), ("", False),
])
def test_booleans(text: str, value: bool) -> None:
    assert _load(CUEBOT_TLS=text).cuebot_tls is value


def test_service_lists_are_trimmed() -> None:
    assert _load(SERVICES=" show.* , job.*,, ").services == ("show.*", "job.*")


def test_empty_exclude_services_exposes_everything() -> None:
    assert _load(EXCLUDE_SERVICES="").exclude_services == ()
    assert _load("--exclude-services", "").exclude_services == ()


def test_paths_expand_the_home_directory() -> None:
    cfg = _load(DESCRIPTOR_SET="~/x.binpb")
    assert cfg.descriptor_set == Path("~/x.binpb").expanduser()


# ---------------------------------------------------------------------------
# descriptor source
# ---------------------------------------------------------------------------
def test_default_source_is_bundled() -> None:
    cfg = _load()
    assert cfg.descriptor_source == "bundled"
    assert cfg.descriptor_set is None and cfg.proto_path is None and cfg.reflection is False


def test_descriptor_set_implies_file() -> None:
    cfg = _load("--descriptor-set", "/x/set.binpb")
    assert cfg.descriptor_source == "file" and cfg.descriptor_set == Path("/x/set.binpb")
    assert _load(DESCRIPTOR_SET="/y.binpb").descriptor_source == "file"


def test_reflection_flag_implies_reflection() -> None:
    cfg = _load("--reflection")
    assert cfg.descriptor_source == "reflection" and cfg.reflection is True


def test_explicit_reflection_source_sets_the_reflection_field() -> None:
    cfg = _load(DESCRIPTOR_SOURCE="reflection")
    assert cfg.descriptor_source == "reflection" and cfg.reflection is True


def test_proto_path_implies_proto() -> None:
    cfg = _load("--proto-path", "/protos")
    assert cfg.descriptor_source == "proto" and cfg.proto_path == Path("/protos")
    assert _load(PROTO_PATH="/protos").descriptor_source == "proto"


@pytest.mark.parametrize("argv,env", [
    (["--descriptor-set", "/a", "--reflection"], {}),
    (["--descriptor-set", "/a", "--proto-path", "/b"], {}),
    (["--reflection", "--proto-path", "/b"], {}),
    (["--reflection"], {"DESCRIPTOR_SET": "/a"}),
    ([], {"DESCRIPTOR_SET": "/a", "PROTO_PATH": "/b"}),
])
def test_two_sources_at_once_is_an_error(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="choose one descriptor source"):
        load(argv, env)


def test_explicit_source_picks_among_several() -> None:
    """DESCRIPTOR_SOURCE says which of the configured sources to use."""
    cfg = _load(DESCRIPTOR_SOURCE="proto", DESCRIPTOR_SET="/a", PROTO_PATH="/b")
    assert cfg.descriptor_source == "proto" and cfg.reflection is False


@pytest.mark.parametrize("source,needs", [("file", "DESCRIPTOR_SET"), ("proto", "PROTO_PATH")])
def test_explicit_source_without_its_setting_is_an_error(source: str, needs: str) -> None:
    with pytest.raises(ConfigError, match=needs):
        _load(DESCRIPTOR_SOURCE=source)
    with pytest.raises(ConfigError, match=needs):
        _load("--descriptor-source", source)


# ---------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------
def test_tls_cert_without_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match="CUEBOT_TLS_KEY"):
        _load(CUEBOT_TLS_CERT="/c.pem")


def test_tls_key_without_cert_is_an_error() -> None:
    with pytest.raises(ConfigError, match="CUEBOT_TLS_CERT"):
        _load("--cuebot-tls-key", "/k.pem")


def test_tls_cert_and_key_together_are_accepted() -> None:
    cfg = _load(CUEBOT_TLS_CERT="/c.pem", CUEBOT_TLS_KEY="/k.pem")
    assert cfg.cuebot_tls_cert == Path("/c.pem") and cfg.cuebot_tls_key == Path("/k.pem")


def test_tls_ca_implies_tls() -> None:
    cfg = _load(CUEBOT_TLS_CA="/ca.pem")
    assert cfg.cuebot_tls is False and cfg.use_tls is True
    assert _load("--cuebot-tls").use_tls is True
    assert _load().use_tls is False


# ---------------------------------------------------------------------------
# Config.with_
# ---------------------------------------------------------------------------
def test_with_changes_only_what_it_is_given() -> None:
    base = _load("--port", "1", "--log-level", "debug")
    cfg = base.with_(grpc_timeout=2.0)
    assert cfg.grpc_timeout == 2.0 and cfg.port == 1 and cfg.log_level == "debug"
    assert base.grpc_timeout == 30.0  # frozen original untouched


def test_with_rechecks_tls_pairs() -> None:
    with pytest.raises(ConfigError, match="CUEBOT_TLS_KEY"):
        Config().with_(cuebot_tls_cert=Path("/c.pem"))


def test_with_rechecks_descriptor_source() -> None:
    with pytest.raises(ConfigError, match="DESCRIPTOR_SET"):
        Config().with_(descriptor_source="file")
    with pytest.raises(ConfigError, match="choose one descriptor source"):
        Config().with_(descriptor_set=Path("/a"), proto_path=Path("/b"))


def test_with_resolves_the_source_again() -> None:
    """A new source setting replaces the old one instead of clashing with it."""
    cfg = Config().with_(descriptor_set=Path("/a"))
    assert cfg.descriptor_source == "file"
    cfg = cfg.with_(reflection=True)
    assert cfg.descriptor_source == "reflection" and cfg.reflection is True
    assert cfg.descriptor_set is None
    cfg = cfg.with_(proto_path=Path("/p"))
    assert cfg.descriptor_source == "proto" and cfg.reflection is False
    assert cfg.with_(port=5).descriptor_source == "proto"


def test_explicit_source_chooses_among_several() -> None:
    env = {"DESCRIPTOR_SOURCE": "bundled", "DESCRIPTOR_SET": "/x.binpb", "PROTO_PATH": "/p"}
    assert load([], env).descriptor_source == "bundled"
    assert load(["--descriptor-source", "proto"], env).descriptor_source == "proto"


def test_abbreviated_flags_are_refused() -> None:
    with pytest.raises(ConfigError, match="--prot"):
        load(["--prot", "/p"], {})


def test_empty_tls_server_name_means_unset() -> None:
    assert load([], {"CUEBOT_TLS_SERVER_NAME": ""}).cuebot_tls_server_name is None
