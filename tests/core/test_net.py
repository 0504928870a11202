import pytest
from django.test import RequestFactory, override_settings

from django_apiauth.core.net import client_ip, peer_is_trusted_proxy


def req(remote, xff=None):
    extra = {"REMOTE_ADDR": remote}
    if xff is not None:
        extra["HTTP_X_FORWARDED_FOR"] = xff
    return RequestFactory().get("/", **extra)


def test_untrusted_peer_forwarded_for_ignored():
    assert client_ip(req("198.51.100.1", "10.0.0.1")) == "198.51.100.1"


@override_settings(APIAUTH_TRUSTED_PROXIES=["10.0.0.0/24"])
@pytest.mark.parametrize(
    ("remote", "xff", "expected"),
    [
        ("10.0.0.5", "203.0.113.9", "203.0.113.9"),
        ("10.0.0.5", "1.1.1.1, 203.0.113.9", "203.0.113.9"),  # left-most is client-forgeable
        ("10.0.0.5", "203.0.113.9, 10.0.0.7", "203.0.113.9"),  # walk past trusted hops
        ("10.0.0.5", "garbage", None),  # unreadable hop: client unknown, never the proxy
        ("10.0.0.5", "203.0.113.9:4711", "203.0.113.9"),  # ip:port (Azure App Gateway)
        ("10.0.0.5", "[2001:db8::7]:443", "2001:db8::7"),
        ("10.0.0.5", "unknown", None),
        ("10.0.0.5", "", "10.0.0.5"),
        ("192.0.2.1", "203.0.113.9", "192.0.2.1"),
    ],
)
def test_trusted_proxy_chain(remote, xff, expected):
    assert client_ip(req(remote, xff)) == expected


@override_settings(APIAUTH_TRUSTED_PROXIES=["10.0.0.0/24"])
def test_peer_is_trusted_proxy():
    assert peer_is_trusted_proxy(req("10.0.0.9"))
    assert not peer_is_trusted_proxy(req("10.0.1.9"))
