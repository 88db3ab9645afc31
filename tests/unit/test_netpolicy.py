"""The SSRF address policy: which names and resolved addresses outbound HTTP may reach."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from pydantic import ValidationError

from turbocat.config import load_settings
from turbocat.domain.netpolicy import AddressRefused, NetPolicy, non_public_reason, parse_entries


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.170.2", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.100.100.200", "metadata"),
        ("168.63.129.16", "metadata"),
        ("192.0.0.192", "metadata"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("198.18.0.1", "benchmarking"),
        ("192.0.2.1", "documentation"),
        ("2001:db8::1", "documentation"),
        ("fc00::1", "unique local"),
        ("fd00:ec2::254", "metadata"),
        ("fec0::1", "site-local"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        # IPv6 forms carrying an IPv4 address are judged by it
        ("::ffff:127.0.0.1", "loopback address inside an IPv6 address"),
        ("::ffff:169.254.169.254", "metadata address inside"),
        ("::ffff:10.0.0.1", "private (RFC 1918) address inside"),
        ("::127.0.0.1", "loopback address inside"),
        ("64:ff9b::a00:1", "private (RFC 1918) address inside"),
        ("64:ff9b::7f00:1", "loopback address inside"),
        ("2002:7f00:1::", "loopback address inside"),
        ("2002:a9fe:a9fe::1", "metadata address inside"),
    ],
)
def test_non_public_addresses_are_named(address: str, reason: str) -> None:
    found = non_public_reason(ip(address))
    assert found is not None and reason in found, found


@pytest.mark.parametrize(
    "address",
    [
        "93.184.215.14",
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
    ],
)
def test_public_addresses_pass(address: str) -> None:
    assert non_public_reason(ip(address)) is None
    NetPolicy().check_addresses("example.com", [ip(address)])


def test_every_address_must_pass_and_messages_say_why() -> None:
    policy = NetPolicy()
    with pytest.raises(AddressRefused) as caught:
        policy.check_addresses("evil.example", [ip("8.8.8.8"), ip("10.0.0.5")])
    assert str(caught.value) == (
        "refused to connect to evil.example (10.0.0.5): a private (RFC 1918) address "
        "(an operator may allow it in [runtimes.http] allow)"
    )
    assert caught.value.address == "10.0.0.5" and caught.value.host == "evil.example"
    with pytest.raises(AddressRefused, match="resolved to no address"):
        policy.check_addresses("empty.example", [])


def test_metadata_names_are_refused_before_any_lookup() -> None:
    policy = NetPolicy()
    for name in ("metadata.google.internal", "METADATA.GOOGLE.INTERNAL.", "metadata", "[metadata]"):
        with pytest.raises(AddressRefused, match="cloud metadata host name"):
            policy.check_name(name)
    policy.check_name("example.com")
    with pytest.raises(AddressRefused, match="empty"):
        policy.check_name(" ")


def test_the_allow_list_permits_networks_and_names() -> None:
    policy = NetPolicy.parse(allow=["127.0.0.1/32", "10.0.0.0/8", "intranet.example", "*.corp.io"])
    policy.check_addresses("anything", [ip("127.0.0.1"), ip("10.9.9.9")])
    policy.check_addresses("anything", [ip("::ffff:10.1.1.1")])  # mapped forms match too
    with pytest.raises(AddressRefused):
        policy.check_addresses("anything", [ip("127.0.0.2")])
    policy.check_addresses("intranet.example", [ip("192.168.7.7")])
    policy.check_addresses("Intranet.Example.", [ip("192.168.7.7")])
    policy.check_addresses("a.b.corp.io", [ip("172.16.0.1")])
    with pytest.raises(AddressRefused):  # the wildcard is for names below it only
        policy.check_addresses("corp.io", [ip("172.16.0.1")])
    with pytest.raises(AddressRefused):
        policy.check_addresses("other.example", [ip("192.168.7.7")])


def test_an_allowed_name_never_reaches_metadata_but_an_allowed_network_does() -> None:
    by_name = NetPolicy.parse(allow=["metadata.google.internal", "rebind.example"])
    by_name.check_name("metadata.google.internal")  # the operator named it: no name refusal
    for address in ("169.254.169.254", "::ffff:169.254.169.254", "168.63.129.16"):
        with pytest.raises(AddressRefused, match="metadata"):
            by_name.check_addresses("rebind.example", [ip(address)])
    NetPolicy.parse(allow=["169.254.169.254/32"]).check_addresses("x", [ip("169.254.169.254")])


def test_the_deny_list_wins_even_with_protection_off() -> None:
    policy = NetPolicy.parse(
        enabled=False,
        allow=["203.0.113.0/24", "self.example"],
        deny=["203.0.113.7", "self.example"],
    )
    policy.check_addresses("x", [ip("10.0.0.1"), ip("127.0.0.1")])  # protection off
    with pytest.raises(AddressRefused, match="deny list"):
        policy.check_addresses("x", [ip("203.0.113.7")])
    with pytest.raises(AddressRefused, match="deny list"):
        policy.check_name("SELF.example")
    policy.check_name("metadata.google.internal")  # off means off, apart from deny


def test_entries_are_parsed_or_refused_with_the_entry_named() -> None:
    networks, hosts = parse_entries(["127.0.0.1", "10.0.0.0/8", "[::1]", "fd00::/8", "a-b.example",
                                     "*.corp.io", "localhost"])  # fmt: skip
    assert [str(n) for n in networks] == ["127.0.0.1/32", "10.0.0.0/8", "::1/128", "fd00::/8"]
    assert hosts == ("a-b.example", "*.corp.io", "localhost")
    for bad in ("", "exa mple.com", "http://x.example", "a..b", "10.0.0.0/33x"):
        with pytest.raises(ValueError, match="neither a network"):
            parse_entries([bad])


def test_operators_set_the_policy_by_environment_or_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TURBOCAT_CONFIG", raising=False)
    monkeypatch.setenv("TURBOCAT_HOME", str(tmp_path))
    monkeypatch.setenv("TURBOCAT_RUNTIMES__HTTP__ALLOW", '["127.0.0.1/32", "intranet.example"]')
    monkeypatch.setenv("TURBOCAT_RUNTIMES__HTTP__SSRF_PROTECTION", "false")
    http = load_settings().runtimes.http
    assert http.allow == ["127.0.0.1/32", "intranet.example"] and http.ssrf_protection is False
    monkeypatch.delenv("TURBOCAT_RUNTIMES__HTTP__ALLOW")
    monkeypatch.delenv("TURBOCAT_RUNTIMES__HTTP__SSRF_PROTECTION")
    toml = tmp_path / "turbocat.toml"
    toml.write_text('[runtimes.http]\nallow = ["10.0.0.0/8"]\ndeny = ["self.example"]\n')
    http = load_settings().runtimes.http
    assert http.allow == ["10.0.0.0/8"] and http.deny == ["self.example"] and http.ssrf_protection
    toml.write_text('[runtimes.http]\nallow = ["10.0.0.0/8", "not a host"]\n')
    with pytest.raises(ValidationError, match="'not a host' is neither a network"):
        load_settings()
