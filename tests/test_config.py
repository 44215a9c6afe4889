"""The configuration schema: exact errors naming file, line and key."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from sendgate import config

CHECKOUT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("text,want", [
    pytest.param("myorigin: example.org\nsubmit_sockte: /x\n", "f.yaml:2: submit_sockte: unknown key", id="unknown-key"),
    pytest.param("submit_socket: run/x.sock\n", "f.yaml:1: submit_socket: expected an absolute path, got 'run/x.sock'",
                 id="relative-path"),
    pytest.param("submit_socket_mode: 666\n",
                 "f.yaml:1: submit_socket_mode: expected an octal file mode such as 0666, got '666'",
                 id="mode-without-leading-zero"),
    pytest.param("submit_timeout: -5\n", "f.yaml:1: submit_timeout: expected a positive whole number, got -5",
                 id="negative-timeout"),
    pytest.param("fixup_date: 'yes'\n", "f.yaml:1: fixup_date: expected true or false, got 'yes'", id="string-bool"),
    pytest.param("log_destination: file\n", "f.yaml:1: log_destination: expected one of syslog, stderr, got 'file'",
                 id="bad-enum"),
    pytest.param("milter_socket: inet:8891\n", "f.yaml:1: milter_socket: expected unix:/absolute/path, got 'inet:8891'",
                 id="inet-milter"),
    pytest.param("myorigin: a\nmyorigin: b\n", "f.yaml:2: myorigin: duplicate key (first set on line 1)", id="duplicate"),
    pytest.param("sender_login_maps:\n  alice: [1, 2]\n",
                 "f.yaml:2: sender_login_maps: expected a list of strings, got [1, 2]", id="bad-map"),
    pytest.param("- a\n- b\n", "f.yaml:1: expected a mapping of key: value", id="not-a-mapping"),
    pytest.param("myorigin: [unclosed\n", "f.yaml:2: not valid YAML: expected ',' or ']', but got '<stream end>'",
                 id="bad-yaml"),
])
def test_bad_configuration(text, want):
    with pytest.raises(config.ConfigError) as err:
        config.parse(text, "f.yaml")
    assert str(err.value) == want


def test_defaults_and_values():
    cfg = config.parse("myhostname: mx.example.org\nsubmit_socket_mode: 0660\n"
                       "sender_login_maps:\n  alice: alice@example.org\n", "f.yaml")
    assert cfg.domain == "mx.example.org"  # myorigin defaults to myhostname
    assert cfg.submit_socket_mode == 0o660
    assert cfg.sender_login_maps == {"alice": ("alice@example.org",)}
    assert cfg.submit_socket == "/run/sendgate/submit.sock"
    assert config.parse("", "f.yaml").values == config.defaults()


def test_render_round_trips():
    values = {"myorigin": "example.org", "submit_socket_mode": 0o600, "fixup_sender": False}
    assert {k: config.parse(config.render(values), "f").values[k] for k in values} == values


@pytest.mark.parametrize("text,status,stderr", [
    pytest.param("myorigin: example.org\n", 0, "", id="valid"),
    pytest.param("nope: 1\n", 78, "sendgate: {path}:1: nope: unknown key\n", id="invalid"),
])
def test_check_config_command(tmp_path, text, status, stderr):
    path = tmp_path / "sendgate.yaml"
    path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "sendgate.admin.cli", "check-config", "--no-mta", str(path)],
                            capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (status, stderr.format(path=path))


def test_missing_file_is_a_configuration_error(tmp_path):
    with pytest.raises(config.ConfigError) as err:
        config.load(str(tmp_path / "none.yaml"))
    assert str(err.value) == f"{tmp_path}/none.yaml: cannot read: No such file or directory"


def test_reference_documentation_is_generated_from_the_schema():
    assert (CHECKOUT / "docs/configuration.md").read_text() == config.reference_markdown(), \
        "docs/configuration.md is stale: sendgate config-doc > docs/configuration.md"


def test_every_key_is_documented():
    for key in config.SCHEMA:
        assert key.doc.endswith(".") and key.type_doc, key.name


def test_every_key_names_the_programs_that_read_it():
    for key in config.SCHEMA:
        assert key.programs and set(key.programs) <= set(config.PROGRAMS), key.name


def test_the_sendmail_commands_copy_of_the_schema():
    """The sendmail command reads its keys without the schema (no YAML
    parser on its send path); its list and defaults must be the schema's."""
    from sendgate.sendmail_shim import client, modes
    assert set(client.SETTINGS) == {k.name for k in config.keys_of("sendmail")}
    assert client.DEFAULT_SOCKET == config.KEYS["submit_socket"].default
    assert {name: default for name, default, _ in modes.DELEGATED.values()} == \
        {name: config.KEYS[name].default for name, _, _ in modes.DELEGATED.values()}
