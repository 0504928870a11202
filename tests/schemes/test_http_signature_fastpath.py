"""The fast signature path and the library agree (differential test).

Requests are signed by the library's own signer (an implementation we do not
control) with many component sets, then verified by both
``http_signature._fast_verify`` and ``http_message_signatures.HTTPMessageVerifier``;
tampered copies must be refused by both.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from django.test import RequestFactory
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    algorithms,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException

from django_apiauth.schemes import http_signature

SECRET = b"s" * 32
ED_KEY = ed25519.Ed25519PrivateKey.generate()
EC_KEY = ec.generate_private_key(ec.SECP256R1())
KEYS = {
    "hmac-sha256": (algorithms.HMAC_SHA256, SECRET, SECRET),
    "ed25519": (algorithms.ED25519, ED_KEY, ED_KEY.public_key()),
    "ecdsa-p256-sha256": (algorithms.ECDSA_P256_SHA256, EC_KEY, EC_KEY.public_key()),
}


class Resolver(HTTPSignatureKeyResolver):
    def __init__(self, private: Any, public: Any) -> None:
        self.private, self.public = private, public

    def resolve_private_key(self, key_id: str) -> Any:
        return self.private

    def resolve_public_key(self, key_id: str) -> Any:
        return self.public


class Message:
    def __init__(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.method, self.url, self.headers = method, url, headers


def signed(alg: str, method: str, url: str, headers: dict[str, str], body: bytes | None,
           components: tuple[str, ...], **kwargs: Any) -> dict[str, str]:
    cls, private, public = KEYS[alg]
    message = Message(method, url, dict(headers))
    HTTPMessageSigner(signature_algorithm=cls, key_resolver=Resolver(private, public)).sign(
        message, key_id="hk_test", covered_component_ids=components, body=body,
        created=None, **kwargs)
    return message.headers


def django_request(method: str, path: str, headers: dict[str, str], body: bytes | None,
                   host: str = "testserver", secure: bool = False) -> Any:
    meta = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()
            if k.lower() not in ("content-type", "content-length")}
    meta["HTTP_HOST"] = host
    content_type = headers.get("Content-Type") or headers.get("content-type")
    factory = RequestFactory()
    return factory.generic(method, path, data=body or b"", content_type=content_type or "",
                           secure=secure, **meta)


def both(alg: str, request: Any) -> tuple[bool | None, bool]:
    presented = http_signature.HttpSignatureAuthentication().extract(request)
    cls, _private, public = KEYS[alg]
    fast = http_signature._fast_verify(request, presented.proof, alg, public)
    verifier = HTTPMessageVerifier(signature_algorithm=cls, key_resolver=Resolver(None, public))
    verifier.max_clock_skew = timedelta(seconds=300)
    try:
        verifier.verify(http_signature._Message(request), max_age=None, body=presented.proof["body"])
        library = True
    except HTTPMessageSignaturesException:
        library = False
    return (None if fast is None else fast[0]), library


CASES = [
    ("GET", "/api/whoami/", {}, None, ("@method", "@target-uri")),
    ("GET", "/api/whoami/?b=2&a=1&a=3", {}, None, ("@method", "@target-uri")),
    ("GET", "/api/whoami/?x=%20y", {}, None, ("@method", "@authority", "@path", "@query")),
    ("GET", "/api/whoami/", {}, None, ("@method", "@authority", "@path", "@query", "@scheme")),
    ("POST", "/api/echo/", {"Content-Type": "application/json"}, b'{"a": 1}',
     ("@method", "@target-uri", "content-type")),
    ("POST", "/api/echo/", {"Content-Type": "application/json", "X-Tenant": "acme\tcorp"},
     b'{"a": 1}', ("@method", "@target-uri", "content-type", "x-tenant")),
    ("PUT", "/api/echo/", {"Content-Type": "text/plain"}, b"x" * 1024,
     ("@method", "@target-uri", "content-digest", "content-type")),
]


@pytest.mark.parametrize("alg", sorted(KEYS))
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("host", ["testserver", "TestServer:8080"])
def test_fast_path_agrees_with_the_library(alg, case, host):
    method, path, headers, body, components = CASES[case]
    url = f"http://{host}{path}"
    sig_headers = signed(alg, method, url, headers, body, components, nonce="n-" + str(time.time_ns()))
    request = django_request(method, path, sig_headers, body, host=host)
    fast, library = both(alg, request)
    assert library is True
    assert fast is True

    tampered = [
        django_request("DELETE" if method != "DELETE" else "GET", path, sig_headers, body, host=host),
        django_request(method, path + ("&" if "?" in path else "?") + "z=1", sig_headers, body, host=host),
        django_request(method, path, sig_headers, body, host="localhost"),
    ]
    if body:
        tampered.append(django_request(method, path, sig_headers, body[:-1] + b"!", host=host))
    for bad in tampered:
        fast, library = both(alg, bad)
        assert library is False
        assert fast in (False, None)


@pytest.mark.parametrize("components", [
    ('"@query-param";name="a"', "@method", "@target-uri"),
    ('"x-list";bs', "@method", "@target-uri"),
])
def test_unusual_components_fall_back_to_the_library(components):
    headers = signed("hmac-sha256", "POST", "http://testserver/api/echo/?a=1",
                     {"Content-Type": "application/json", "X-List": "a, b"}, None, components)
    request = django_request("POST", "/api/echo/?a=1", headers, None)
    presented = http_signature.HttpSignatureAuthentication().extract(request)
    assert http_signature._fast_verify(request, presented.proof, "hmac-sha256", SECRET) is None
    assert both("hmac-sha256", request) == (None, True)


def test_digest_rules():
    import base64
    import hashlib

    body = b'{"a": 1}'

    def sf(alg, raw):
        return f"{alg}=:{base64.b64encode(raw).decode()}:"

    good256 = sf("sha-256", hashlib.sha256(body).digest())
    good512 = sf("sha-512", hashlib.sha512(body).digest())
    assert http_signature._digest_matches(good256, body)
    assert http_signature._digest_matches(f"{good256}, {good512}", body)
    assert not http_signature._digest_matches(sf("md5", hashlib.md5(body).digest()), body)  # noqa: S324
    assert not http_signature._digest_matches(f"{good256}, {sf('sha-512', b'x' * 64)}", body)
    assert not http_signature._digest_matches(good256, body + b" ")
    assert not http_signature._digest_matches("garbage", body)
    assert not http_signature._digest_matches("", body)


@pytest.mark.parametrize("value", [
    'sig=("@method" "@target-uri");created=1700000000;keyid="hk_x";alg="hmac-sha256";nonce="abc"',
    'sig=( "@method"  "@target-uri" );created=1',
    'sig=();created=1',
    'sig=("@method");created=-5;keyid="a b"',
    'sig=("@method");keyid="x";keyid="y"',
    'sig=("@method";sf);created=1',
    'sig=:AAECAwQ=:',
    'sig=:AAECAwQ:',
    "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
    "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:, sha-512=:AA==:",
    'sig=:AA==:;x=1',
    'a=("x"), b=("y")',
])
def test_fast_dictionary_parser_agrees_with_http_sf(value):
    import http_sf

    try:
        expected = http_sf.parse(value.encode(), tltype="dictionary")
    except Exception as exc:
        with pytest.raises(type(exc)):
            http_signature.parse_dictionary(value)
        return
    got = http_signature.parse_dictionary(value)
    assert list(got) == list(expected)
    for label in got:
        (g_value, g_params), (e_value, e_params) = got[label], expected[label]
        assert dict(g_params) == dict(e_params)
        if isinstance(e_value, list):
            assert [(v, dict(p)) for v, p in g_value] == [(v, dict(p)) for v, p in e_value]
        else:
            assert g_value == e_value


@pytest.mark.parametrize("path", [
    "/api/whoami/",
    "/api/whoami/?b=2&a=1&a=3",
    "/api/whoami/?x=%20y&e=%C3%A9",
    "/api/%C3%A9t%C3%A9/",
    "/api/a%2Fb/",
    "/api/./whoami/",
    "/api/../whoami/",
    "/api/whoami/.",
    "//api/whoami/",
    "/api/whoami/?next=/./x",
    "/api/wh%3Foami/?q=1#frag",
    "/api/a;b=c/?x=1;y=2",
    "/api/~user/('x')*!$&+,:@/",
    "/api/100%25/?p=%25&q=a+b",
    "/api/a%20b/?q=%20",
    "/api/[x]/?a[]=1",
    "/api/a'b/?q='\"'",
    "/api/%E2%82%AC/?q=%E2%82%AC",
])
@pytest.mark.parametrize(("host", "secure"), [("testserver", False), ("TestServer:8080", True)])
def test_target_uri_is_build_absolute_uri(path, host, secure):
    request = django_request("GET", path, {}, None, host=host, secure=secure)
    expected = request.build_absolute_uri()
    assert http_signature._target_uri(request, request.scheme, request.get_host()) == expected


@pytest.mark.parametrize("value", [
    'sig=("@method" "@target-uri");created=1700000000;keyid="hk_x";alg="hmac-sha256";nonce="a;b=c"',
    'sig1=("@method" "@authority" "@path" "@query" "content-digest");created=1;keyid="k";expires=0',
    'sig=("@method");created=-5;keyid="a b"',
    'sig=();created=1;keyid="x"',
    'sig=("x-a b" "c");keyid=""',
])
def test_canonical_signature_input_is_its_own_serialization(value):
    """A canonical member parses as http_sf parses it, and its text after ``label=``
    is exactly what serializing the parsed inner list gives (the @signature-params line)."""
    import http_sf

    label, components, params, text = http_signature._canonical_signature_input(value)
    [(expected_label, (members, expected_params))] = http_sf.parse(
        value.encode(), tltype="dictionary").items()
    assert label == expected_label
    assert params == dict(expected_params)
    assert list(http_signature._canonical_plan(components).names) == [m for m, _p in members]
    assert text == http_sf.ser({label: (members, expected_params)})[len(label) + 1:]


@pytest.mark.parametrize("value", [
    'sig=( "@method" "@target-uri");created=1',      # whitespace inside the list
    'sig=("@method"  "@target-uri");created=1',      # two spaces
    'sig=("@method");created=007;keyid="x"',         # leading zeros
    'sig=("@method");created=-0;keyid="x"',          # negative zero
    'sig=("@method");keyid="x";keyid="y"',           # duplicate parameter
    'sig=("@method";sf);created=1',                  # component parameter
    'sig=("@method"); created=1',                    # space before a parameter
    'sig=("@method");created=1 ',                    # trailing space
    'sig=("@method");flag;created=1',                # boolean parameter
    'sig=("a\\"b");created=1',                       # escaped quote
    'sig=("@method"), other=("@path")',              # two members
    'Sig=("@method");created=1',                     # upper-case key
    'sig=("@method");created=1;',                    # trailing separator
    'sig=("@method");created=1234567890123456',      # 16 digits
    'sig=("@method")x;created=1',                    # text between list and parameters
    'sig=("@method");created=1x',                    # text after a parameter
    'sig=("a)b");created=1',                         # ")" inside a name: left to the parser
    'sig=("@method"',                                # no closing parenthesis
])
def test_anything_not_canonical_goes_to_the_full_parser(value):
    assert http_signature._canonical_signature_input(value) is None


@pytest.mark.parametrize("length", [0, 1, 16, 32, 63, 64, 65, 100, 200])
def test_hmac_with_cached_pads_is_hmac_sha256(length):
    import hashlib
    import hmac
    import os

    key, message = os.urandom(length), os.urandom(300)
    expected = hmac.new(key, message, hashlib.sha256).digest()
    assert http_signature._check_signature("hmac-sha256", key, expected, message)
    assert not http_signature._check_signature("hmac-sha256", key, expected, message + b"x")
    flipped = bytes([expected[0] ^ 1]) + expected[1:]
    assert not http_signature._check_signature("hmac-sha256", key, flipped, message)
    # The cached pads are not changed by a verification (copies are updated).
    assert http_signature._check_signature("hmac-sha256", key, expected, message)


def test_digest_fast_shape_and_full_parser_agree():
    import base64
    import hashlib

    body = b"x" * 1024
    raw = hashlib.sha256(body).digest()
    padded = base64.b64encode(raw).decode()
    assert http_signature._digest_matches(f"sha-256=:{padded}:", body)
    # Not the fast shape: left to the full parser, same verdicts as before.
    assert http_signature._digest_matches(f"sha-256=:{padded}:;x=1", body)
    assert not http_signature._digest_matches(f"sha-256=:{padded}", body)
    assert not http_signature._digest_matches(f"sha-256=:{padded[:-4]}:", body)
    assert not http_signature._digest_matches(f"sha-256=:{padded}:, sha-256=:AAAA:", body)


def test_a_refused_host_is_never_remembered_and_a_settings_change_forgets(settings):
    from django.core.exceptions import DisallowedHost

    settings.ALLOWED_HOSTS = ["good.example"]
    good = RequestFactory().get("/", HTTP_HOST="good.example")
    bad = RequestFactory().get("/", HTTP_HOST="bad.example")
    assert http_signature._validated_host(good) == "good.example"
    for _ in range(2):
        with pytest.raises(DisallowedHost):
            http_signature._validated_host(bad)
    assert "bad.example" not in http_signature._ACCEPTED_HOSTS
    settings.ALLOWED_HOSTS = ["other.example"]  # sends setting_changed
    with pytest.raises(DisallowedHost):
        http_signature._validated_host(good)
