"""lxml surgery on real pysaml2-signed responses, to build the attack documents."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from lxml import etree

NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
}
ASSERTION = "urn:oasis:names:tc:SAML:2.0:assertion:Assertion"
RESPONSE = "urn:oasis:names:tc:SAML:2.0:protocol:Response"


def parse(xml: str | bytes) -> Any:
    raw = xml.encode() if isinstance(xml, str) else xml
    return etree.fromstring(raw, etree.XMLParser(remove_blank_text=False, resolve_entities=False))


def dump(root: Any) -> bytes:
    return etree.tostring(root)


def one(root: Any, path: str) -> Any:
    found = root.xpath(path, namespaces=NS)
    assert len(found) == 1, (path, len(found))
    return found[0]


def edit(xml: str | bytes, change: Callable[[Any], None]) -> bytes:
    root = parse(xml)
    change(root)
    return dump(root)


def resign_assertion(idp: Any, xml: str | bytes, change: Callable[[Any], None]) -> str:
    """Apply ``change`` to the document, then sign the assertion again with the IdP's key:
    a *validly signed* assertion that says something else (wrong audience, issuer, …)."""
    root = parse(xml)
    change(root)
    assertion = one(root, "/samlp:Response/saml:Assertion")
    return str(idp.sec.sign_statement(dump(root).decode(), ASSERTION, node_id=assertion.get("ID")))


def strip_signatures(root: Any) -> None:
    for signature in root.xpath("//ds:Signature", namespaces=NS):
        signature.getparent().remove(signature)


def set_text(path: str, value: str) -> Callable[[Any], None]:
    def change(root: Any) -> None:
        one(root, path).text = value
    return change


def set_attr(path: str, name: str, value: str | None) -> Callable[[Any], None]:
    def change(root: Any) -> None:
        node = one(root, path)
        if value is None:
            node.attrib.pop(name, None)
        else:
            node.set(name, value)
    return change


def evil_copy(assertion: Any, subject: str, new_id: str | None = None, keep_signature: bool = False) -> Any:
    """A copy of ``assertion`` naming ``subject``, without its signature unless asked."""
    evil = copy.deepcopy(assertion)
    if not keep_signature:
        for signature in evil.xpath("ds:Signature", namespaces=NS):
            evil.remove(signature)
    if new_id is not None:
        evil.set("ID", new_id)
    one(evil, "saml:Subject/saml:NameID").text = subject
    return evil
