"""The proxy rules of :mod:`dtbundle.registry.proxy`, pure: which variable wins, what NO_PROXY
matches (names, domains, addresses, CIDR ranges v4/v6, ports, ``*``), what a proxy URL may be,
and how a proxy is shown. Traffic through a real proxy is in ``test_proxy.py``."""

from __future__ import annotations

import pytest

from dtbundle.errors import UsageError
from dtbundle.registry.proxy import NoProxyEntry, Proxy, ProxySettings


def bypassed(no_proxy: str, url: str) -> bool:
    """Whether ``url`` goes direct, with a proxy for both schemes and ``NO_PROXY=no_proxy``."""
    env = {"HTTPS_PROXY": "proxy:3128", "HTTP_PROXY": "proxy:3128", "NO_PROXY": no_proxy}
    return ProxySettings.from_environment(env).proxy_for(url) is None


@pytest.mark.parametrize(
    ("no_proxy", "url", "expected"),
    [
        ("example.com", "https://example.com/v2/", True),
        ("example.com", "https://registry.example.com/v2/", True),
        ("example.com", "https://notexample.com/v2/", False),
        ("example.com", "https://example.com.evil.io/v2/", False),
        (".example.com", "https://example.com/v2/", True),
        (".example.com", "https://a.b.example.com/v2/", True),
        ("*.example.com", "https://a.example.com/v2/", True),
        ("*.example.com", "https://example.com/v2/", True),
        ("EXAMPLE.com", "https://Registry.Example.COM/v2/", True),
        ("example.com.", "https://example.com./v2/", True),
        ("localhost", "http://localhost:5000/v2/", True),
        ("localhost", "http://127.0.0.1:5000/v2/", False),  # names are never resolved
    ],
)
def test_no_proxy_host_names_match_the_host_and_its_subdomains(no_proxy: str, url: str, expected: bool) -> None:
    assert bypassed(no_proxy, url) is expected


@pytest.mark.parametrize(
    ("no_proxy", "url", "expected"),
    [
        ("127.0.0.1", "http://127.0.0.1:5000/v2/", True),
        ("127.0.0.1", "http://127.0.0.2:5000/v2/", False),
        ("10.0.0.0/8", "https://10.20.30.40/v2/", True),
        ("10.0.0.0/8", "https://11.0.0.1/v2/", False),
        ("10.0.0.0/8", "https://ten.example/v2/", False),
        ("192.168.1.7/24", "https://192.168.1.200/v2/", True),  # host bits are ignored, as curl does
        ("::1", "http://[::1]:5000/v2/", True),
        ("[::1]", "http://[::1]:5000/v2/", True),
        ("[::1]", "http://127.0.0.1:5000/v2/", False),
        ("fd00::/8", "https://[fd12:3456::1]/v2/", True),
        ("fd00::/8", "https://[fe80::1]/v2/", False),
        ("fd00::/8", "https://10.0.0.1/v2/", False),
        ("[fd00::]/8", "https://[fd00::5]/v2/", True),
        ("0.0.0.0/0", "https://203.0.113.9/v2/", True),
        ("0.0.0.0/0", "https://[2001:db8::1]/v2/", False),
    ],
)
def test_no_proxy_addresses_and_ranges_v4_and_v6(no_proxy: str, url: str, expected: bool) -> None:
    assert bypassed(no_proxy, url) is expected


@pytest.mark.parametrize(
    ("no_proxy", "url", "expected"),
    [
        ("example.com:5000", "https://example.com:5000/v2/", True),
        ("example.com:5000", "https://example.com:5001/v2/", False),
        ("example.com:443", "https://example.com/v2/", True),  # the scheme's default port
        ("example.com:80", "https://example.com/v2/", False),
        ("example.com:80", "http://a.example.com/v2/", True),
        ("127.0.0.1:5000", "http://127.0.0.1:5000/v2/", True),
        ("127.0.0.1:5000", "http://127.0.0.1:5001/v2/", False),
        ("10.0.0.0/8:443", "https://10.1.2.3/v2/", True),
        ("10.0.0.0/8:443", "https://10.1.2.3:8443/v2/", False),
        ("[::1]:5000", "http://[::1]:5000/v2/", True),
        ("[::1]:5000", "http://[::1]:6000/v2/", False),
        ("[fd00::]/8:5000", "http://[fd00::1]:5000/v2/", True),
        ("example.com:notaport", "https://example.com/v2/", False),  # ignored, as curl ignores it
        ("example.com:70000", "https://example.com/v2/", False),
    ],
)
def test_no_proxy_entries_with_a_port_match_only_that_port(no_proxy: str, url: str, expected: bool) -> None:
    assert bypassed(no_proxy, url) is expected


def test_no_proxy_star_separators_and_whitespace() -> None:
    assert bypassed("*", "https://anything.example/v2/") and bypassed("*", "http://[::1]/v2/")
    assert bypassed("a.example, *", "https://other.example/v2/")
    listed = "  a.example ,b.example\tc.example\n,, 10.0.0.0/8 "
    for url in ("https://a.example/", "https://x.b.example/", "https://c.example/", "https://10.9.9.9/"):
        assert bypassed(listed, url), url
    assert not bypassed(listed, "https://d.example/")
    assert not bypassed("*.", "https://example.com/") and not bypassed("", "https://example.com/")
    assert not bypassed("a*b.example", "https://axb.example/")  # * only as a whole entry or a *. prefix


def test_no_proxy_entries_that_do_not_parse_are_ignored() -> None:
    for junk in ("a.example:", "[::1", "[::1]x", "a.example:0", "*", "a/b", "user@host", "[::1]:"):
        assert NoProxyEntry.parse(junk) is None, junk
    assert NoProxyEntry.parse(" *.Example.COM:8443 ") == NoProxyEntry(domain="example.com", port=8443)


def test_environment_precedence_and_sources() -> None:
    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2", "ALL_PROXY": "http://all:3"}
    settings = ProxySettings.from_environment(env)
    assert settings.https == Proxy("http", "lower", 2, "https_proxy")  # lower case first, as curl
    assert settings.http == Proxy("http", "all", 3, "ALL_PROXY")  # the fallback
    assert settings.proxy_for("ftp://x/") is None
    assert ProxySettings.from_environment({"HTTP_PROXY": "proxy.corp:3128"}).http == Proxy(
        "http", "proxy.corp", 3128, "HTTP_PROXY"
    )
    assert ProxySettings.from_environment({"HTTP_PROXY": "  "}).proxies == ()  # blank is unset
    assert ProxySettings.from_environment({"HTTPS_PROXY": "https://p"}).https == Proxy("https", "p", 443, "HTTPS_PROXY")
    assert ProxySettings.from_environment({}).proxies == () and ProxySettings().proxy_for("https://a/") is None
    explicit = ProxySettings.from_environment({**env, "NO_PROXY": "internal"}, "http://u:p%40ss@Explicit:8080/")
    assert explicit.https == explicit.http == Proxy("http", "explicit", 8080, "--proxy", "u", "p@ss")
    assert explicit.proxy_for("https://internal/v2/") is None  # NO_PROXY applies to --proxy too
    assert explicit.proxy_for("http://outside/v2/") is explicit.https
    assert ProxySettings.from_environment(env, "").proxies == ()  # --proxy "": direct
    # A socks ALL_PROXY that both own variables shadow is never used, so it is not an error.
    shadowed = {"ALL_PROXY": "socks5://s:1080", "HTTPS_PROXY": "http://p:1", "HTTP_PROXY": "http://p:1"}
    assert [p.source for p in ProxySettings.from_environment(shadowed).proxies] == ["HTTPS_PROXY", "HTTP_PROXY"]


def test_proxies_are_shown_redacted_with_their_source() -> None:
    proxy = Proxy.parse("http://user:s3cr3t@Proxy.Corp:3128", "HTTPS_PROXY")
    assert proxy.describe() == "proxy http://***@proxy.corp:3128 (from HTTPS_PROXY)"
    assert proxy.url == "http://proxy.corp:3128" and proxy.auth == ("user", "s3cr3t")
    assert "s3cr3t" not in repr(proxy) and "s3cr3t" not in repr(ProxySettings(proxy, proxy))
    assert Proxy.parse("http://[::1]:8080", "--proxy").describe() == "proxy http://[::1]:8080 (from --proxy)"
    assert Proxy.parse("http://p", "x").port == 80 and Proxy.parse("https://p", "x").port == 443


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("socks5://user:s3cr3t@proxy:1080", ["socks5://", "only http:// and https://"]),
        ("ftp://proxy:21", ["ftp://"]),
        ("http://user:s3cr3t@proxy:99999", ["invalid port"]),
        ("http://user:s3cr3t@proxy:3128/path", ["not a proxy URL"]),
        ("http://", ["not a proxy URL"]),
        ("http://user:s3/cr3t@proxy:3128", ["invalid port"]),  # a "/" in the password: still hidden
        ("http://user:s3cr3t#x@proxy:3128", []),
    ],
)
def test_unusable_proxy_urls_are_usage_errors(value: str, words: list[str]) -> None:
    with pytest.raises(UsageError) as info:
        ProxySettings.from_environment({"all_proxy": value})
    assert str(info.value).startswith("all_proxy: ") and "cr3t" not in str(info.value)
    assert all(word in str(info.value) for word in words), str(info.value)
