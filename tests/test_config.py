"""Configuration: every problem named by its key, secrets never shown, insecure files refused."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest

from bot.cli import main
from bot.config.loader import ConfigError, Secret, SecretError, insecure_secrets_problem, load_config, parse_config


def test_a_full_config_parses() -> None:
    config = parse_config(
        {
            "dns": {"nameservers": ["127.0.0.1:5353", "[::1]:53"], "timeout": 2},
            "dnsbl": {"disabled": ["dnsbl-2.uceprotect.net."], "dqs_key": "k"},
            "monitor": {
                "ips": ["192.0.2.1", "2001:DB8::1"],
                "domains": ["Example.ORG"],
                "helo_names": ["mx.example.org"],
            },
            "domains": {"example.org": {"dkim_selectors": ["s1", "s2"]}},
            "state": {"dir": "/tmp/x"},
        }
    )
    assert config.dns.nameservers == ("127.0.0.1:5353", "[::1]:53")
    assert config.dns.timeout == 2.0
    assert config.monitor.ips == ("192.0.2.1", "2001:db8::1")
    assert config.monitor.domains == ("example.org",)
    assert config.dnsbl.disabled == frozenset({"dnsbl-2.uceprotect.net"})
    assert config.dkim_selectors() == {"example.org": ("s1", "s2")}
    assert config.dnsbl_key is not None and config.dnsbl_key.get() == "k"


def test_every_problem_is_named_by_its_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "dns": {"nameservers": ["dns.example:53", 5], "timeout": "fast", "timout": 3},
                "monitor": {"ips": ["999.1.1.1"], "domains": ["a..b"]},
                "matrix": {"homeserver": "matrix.example.org", "user_id": "repbot"},
                "bogus": {},
            }
        )
    problems = "\n".join(caught.value.problems)
    for key in (
        "dns.nameservers[0]",
        "dns.nameservers[1]",
        "dns.timeout: expected float",
        "dns.timout: unknown key (did you mean 'timeout'?)",
        "monitor.ips[0]",
        "monitor.domains[0]",
        "matrix.homeserver",
        "matrix.user_id",
        "matrix.password",
        "bogus: unknown key",
    ):
        assert key in problems


def test_secret_sources(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("from-file\n")
    assert Secret("k", file=str(secret_file)).get() == "from-file"
    assert Secret("k", command="printf from-command").get() == "from-command"
    with pytest.raises(SecretError, match="status 3") as caught:
        Secret("k", command="echo hunter2-out; exit 3").get()
    assert "hunter2" not in str(caught.value)
    with pytest.raises(SecretError, match="cannot read"):
        Secret("k", file=str(tmp_path / "missing")).get()
    assert "hunter2" not in repr(Secret("k", inline="hunter2"))


def test_a_secret_that_cannot_be_read_says_so_in_the_operators_language(tmp_path: Path) -> None:
    from bot.i18n import use_language

    with use_language("es"):
        with pytest.raises(SecretError, match="k_command: terminó con el estado 3: oops"):
            Secret("k", command="echo oops >&2; exit 3").get()
        with pytest.raises(SecretError, match="k_command: no imprimió nada"):
            Secret("k", command="true").get()
        with pytest.raises(SecretError, match=r"k_file: no se puede leer .*missing"):
            Secret("k", file=str(tmp_path / "missing")).get()


def test_only_one_source_per_secret() -> None:
    with pytest.raises(ConfigError, match="give only one of"):
        parse_config({"dnsbl": {"dqs_key": "a", "dqs_key_file": "/b"}})


def _write(tmp_path: Path, text: str, mode: int) -> Path:
    path = tmp_path / "repbot.toml"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_inline_secret_in_a_world_readable_file_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, '[dnsbl]\ndqs_key = "hunter2"\n', 0o644)
    problem = insecure_secrets_problem(load_config(path))
    assert problem is not None and "chmod 600" in problem and "hunter2" not in problem
    os.chmod(path, 0o600)
    assert insecure_secrets_problem(load_config(path)) is None
    command_only = _write(tmp_path, '[dnsbl]\ndqs_key_command = "pass show dqs"\n', 0o644)
    assert insecure_secrets_problem(load_config(command_only)) is None


def test_config_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, '[monitor]\nips = ["192.0.2.1"]\n', 0o600)
    assert main(["config", "check", "-c", str(good)]) == 0
    bad = _write(tmp_path, '[monitor]\nips = ["192.0.2.300"]\n[dns]\ntimeout = -1\n', 0o600)
    assert main(["config", "check", "-c", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "monitor.ips[0]" in out and "dns.timeout" in out
    broken = _write(tmp_path, "[monitor\n", 0o600)
    assert main(["config", "check", "-c", str(broken)]) == 1
    assert "not valid TOML" in capsys.readouterr().out


def test_the_example_config_is_valid_with_every_commented_key_uncommented() -> None:
    """config.example.toml documents every key: commented-out examples must be valid too."""
    root = Path(__file__).resolve().parent.parent
    lines = []
    for line in (root / "config.example.toml").read_text(encoding="utf-8").splitlines():
        example = line.startswith("# [") or re.match(r"^# [a-z_]+ = ", line)
        lines.append(line[2:] if example else line)
    config = parse_config(tomllib.loads("\n".join(lines)))
    assert config.matrix is not None and config.matrix.admins
    assert config.metrics.listen == "127.0.0.1:9464"
    assert config.schedule.intervals["postmaster"].total_seconds() == 12 * 3600


def test_a_domains_sending_ips_are_read_and_checked() -> None:
    config = parse_config({"monitor": {"ips": ["192.0.2.1", "192.0.2.2"]},
                           "domains": {"example.org": {"sending_ips": ["192.0.2.2"]}, "example.net": {}}})  # fmt: skip
    assert config.domain_sending_ips() == {"example.org": ("192.0.2.2",)}
    with pytest.raises(ConfigError, match="sending_ips"):
        parse_config({"domains": {"example.org": {"sending_ips": ["not-an-ip"]}}})
