"""Canonicalisation of the signed target (RFC 9421 §2.2), as documented in docs/http-signatures.md.

The server rebuilds ``@target-uri`` / ``@path`` / ``@query`` from the request it
received and never normalises the query: the client must sign exactly what it
sends. Each case here is a rule the documentation states.
"""

from __future__ import annotations

import pytest

from tests.schemes.test_http_signature import (
    ORIGIN,
    WHOAMI,
    assert_ok,
    deliver,
    only_row,
    prepare,
    sign_raw,
)

pytestmark = pytest.mark.django_db


def signed(credential, secret, *, path, covered):
    """Sign ``path`` byte for byte as given (requests would re-quote it first)."""
    prepared = prepare("GET", WHOAMI)
    prepared.url = ORIGIN + path
    return sign_raw(prepared, credential.key_id, secret, covered=covered)

SPLIT = ("@method", "@authority", "@path", "@query")
TARGETS = pytest.mark.parametrize("covered", [("@method", "@target-uri"), SPLIT], ids=["target-uri", "split"])


@TARGETS
@pytest.mark.parametrize("query", ["?b=2&a=1", "?a=1&a=2", "?a=%7e&b=%7E", "?q=a+b&r=a%20b", "?flag",
                                   "?x=&y"])
def test_the_query_verifies_exactly_as_sent(client, hmac_secret, covered, query):
    credential, secret = hmac_secret
    assert_ok(deliver(client, signed(credential, secret, path=WHOAMI + query, covered=covered)))


@TARGETS
@pytest.mark.parametrize(("sent", "delivered"), [
    ("?a=1&b=2", "?b=2&a=1"),          # reordered by a proxy
    ("?a=1&a=2", "?a=2&a=1"),          # duplicates reordered
    ("?a=1&a=2", "?a=1"),              # a duplicate dropped
    ("?a=1", "?a=1&a=1"),              # a duplicate added
    ("?q=a+b", "?q=a%20b"),            # re-encoded space
    ("?x=%7e", "?x=%7E"),              # percent-encoding case changed
    ("?x=%7E", "?x=~"),                # unreserved character decoded
])
def test_a_query_changed_in_transit_is_refused(client, hmac_secret, covered, sent, delivered):
    credential, secret = hmac_secret
    prepared = signed(credential, secret, path=WHOAMI + sent, covered=covered)
    response = deliver(client, prepared, path=WHOAMI + delivered)
    assert response.status_code == 401
    assert only_row().reason == "bad_signature"


@TARGETS
def test_a_path_with_percent_encoded_unreserved_characters_is_refused(client, hmac_secret, covered):
    # WSGI hands Django the decoded path; the server re-encodes it minimally
    # (/api/whoami/), so a client that signed a needlessly encoded path
    # (/api/who%61mi/) does not verify: sign the path in its minimal form.
    credential, secret = hmac_secret
    prepared = signed(credential, secret, path="/api/who%61mi/", covered=covered)
    response = deliver(client, prepared)
    assert response.status_code == 401
    assert only_row().reason == "bad_signature"


@TARGETS
def test_a_path_with_reserved_characters_encoded_is_refused(client, hmac_secret, covered):
    # %2F is decoded to "/" by the WSGI server before Django sees it: the
    # signed "/api%2Fwhoami/" can never be rebuilt, so it is refused rather
    # than accepted for a different resource.
    credential, secret = hmac_secret
    prepared = signed(credential, secret, path="/api%2Fwhoami/", covered=covered)
    response = deliver(client, prepared, path="/api/whoami/")
    assert response.status_code == 401
    assert only_row().reason == "bad_signature"


@TARGETS
def test_non_ascii_path_verifies_in_its_utf8_percent_encoded_form(client, hmac_secret, covered):
    credential, secret = hmac_secret
    prepared = signed(credential, secret, path="/api/whoami/?name=%C3%A9", covered=covered)
    assert_ok(deliver(client, prepared))


def test_an_empty_query_marker_is_not_kept(client, hmac_secret):
    # "/api/whoami/?" reaches Django with an empty QUERY_STRING, which the
    # server rebuilds without the "?": a client signing the bare "?" is refused.
    credential, secret = hmac_secret
    prepared = signed(credential, secret, path=WHOAMI + "?", covered=("@method", "@target-uri"))
    response = deliver(client, prepared, path=WHOAMI)
    assert response.status_code == 401
    assert only_row().reason == "bad_signature"
