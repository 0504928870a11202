"""Requests of every stored-credential scheme from a chosen address, for the
rate-limit, lockout and alert tests. Credentials are issued through the
lifecycle, as the admin and the CLI do; requests go through the example
project's ``/api/whoami/``, which accepts every scheme."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from django_apiauth.ca.authority import create_ca
from django_apiauth.core import lifecycle
from django_apiauth.models import ApiKey, AuditEvent, ClientCertificate, HmacSecret
from django_apiauth.sign import sign_request

WHOAMI = "/api/whoami/"
#: The TLS terminator that forwards client certificates (a trusted proxy).
TERMINATOR = "127.0.0.2"
SCHEMES = ("api_key", "hmac", "client_cert")


class Holder:
    """One credential and how to send a request with it (or with a wrong proof)."""

    def __init__(self, scheme: str, credential: Any, secret: str) -> None:
        self.scheme = scheme
        self.credential = credential
        self.secret = secret

    @property
    def credential_id(self) -> str:
        return str(self.credential.public_id)

    def get(self, client: Any, ip: str = "198.51.100.1", *, wrong: bool = False) -> Any:
        if self.scheme == "api_key":
            key = self.secret
            if wrong:  # same lookup id, other secret (the checksum is recomputed below)
                key = _wrong_key(key)
            return client.get(WHOAMI, HTTP_AUTHORIZATION=f"Api-Key {key}", REMOTE_ADDR=ip)
        if self.scheme == "hmac":
            secret = ("x" * len(self.secret)) if wrong else self.secret
            headers = sign_request("GET", "http://testserver" + WHOAMI, {}, None,
                                   self.credential.key_id, secret.encode())
            meta = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
            return client.get(WHOAMI, REMOTE_ADDR=ip, **meta)
        # client_cert: forwarded by the terminator; the client address in X-Forwarded-For.
        pem = self.credential.certificate_pem
        if wrong:
            # A certificate the server does not know: refused as unknown.
            pem = _other_cert_pem(self.credential)
        return client.get(WHOAMI, REMOTE_ADDR=TERMINATOR, HTTP_X_FORWARDED_FOR=ip,
                          HTTP_X_SSL_CLIENT_CERT=quote(pem))


def _wrong_key(key: str) -> str:
    """The same lookup id with another secret and a valid checksum (reaches verification)."""
    from django_apiauth.core import crypto

    prefix, lookup_id, _tail = key.split("_", 2)
    body = f"{prefix}_{lookup_id}_{'A' * crypto.SECRET_LENGTH}"
    return body + crypto.checksum(body)


_OTHER: dict[str, str] = {}


def _other_cert_pem(credential: Any) -> str:
    """A valid certificate of the same CA that was never registered (revoked row deleted)."""
    if "pem" not in _OTHER or not credential.ca_id:
        other, _key = lifecycle.issue(ClientCertificate, owner=credential.owner, ca=credential.ca,
                                      name="unregistered")
        _OTHER["pem"] = other.certificate_pem
        ClientCertificate.objects.filter(pk=other.pk).delete()
    return _OTHER["pem"]


def make_holder_factory(user: Any) -> Callable[..., Holder]:
    ca_holder: dict[str, Any] = {}

    def make(scheme: str, **fields: Any) -> Holder:
        fields.setdefault("name", f"{scheme} client")
        if scheme == "api_key":
            credential, secret = lifecycle.issue(ApiKey, owner=user, **fields)
        elif scheme == "hmac":
            credential, secret = lifecycle.issue(HmacSecret, owner=user, **fields)
        else:
            if "ca" not in ca_holder:
                ca_holder["ca"] = create_ca(name="Abuse tests CA", slug="abuse-ca")
                _OTHER.clear()
            credential, secret = lifecycle.issue(ClientCertificate, owner=user, ca=ca_holder["ca"],
                                                 **fields)
        return Holder(scheme, credential, secret)

    return make


def rows(**filters: Any) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(**filters).order_by("id"))
