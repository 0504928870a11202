"""The admin: issuing, rotating and revoking credentials; the read-only audit trail."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.contrib.messages import WARNING
from django.db import connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from freezegun import freeze_time
from rest_framework.test import APIClient

from django_apiauth.admin import ApiKeyAdmin, AuditEventAdmin, CappedCountPaginator
from django_apiauth.core import audit, lifecycle
from django_apiauth.models import ApiKey, AuditEvent

pytestmark = pytest.mark.django_db

KEY_RE = re.compile(r"\bak_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}\b")
CHANGELIST = "admin:django_apiauth_apikey_changelist"
AUDIT_CHANGELIST = "admin:django_apiauth_auditevent_changelist"

MakeKey = Callable[..., tuple[ApiKey, str]]


def whoami(key: str) -> int:
    return APIClient().get("/api/whoami/", HTTP_AUTHORIZATION=f"Api-Key {key}").status_code


def change_url(obj: Any) -> str:
    return reverse(f"admin:django_apiauth_{obj._meta.model_name}_change", args=(obj.pk,))


def warnings_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"] if m.level == WARNING]


def keys_in(response: Any) -> list[str]:
    return KEY_RE.findall(" ".join(warnings_of(response)))


def run_action(client: Client, action: str, objs: list[Any], **form: str) -> Any:
    """Post an action from the change list, then its confirmation page with ``form``."""
    url = reverse(CHANGELIST)
    pks = [str(obj.pk) for obj in objs]
    first = client.post(url, {"action": action, "index": "0", "_selected_action": pks})
    assert first.status_code == 200, first
    return client.post(
        url, {"action": action, "_selected_action": pks, "confirm": "yes", **form}, follow=True,
    )


def content(response: Any) -> str:
    return response.content.decode()


# -- issue ----------------------------------------------------------------------


def test_add_shows_the_key_once_and_it_authenticates(admin_client: Client, user: Any) -> None:
    response = admin_client.post(reverse("admin:django_apiauth_apikey_add"), {
        "owner": user.pk, "name": "CI deploys", "scopes": "echo:write orders:read",
        "allowed_ips": "", "not_before_0": "", "not_before_1": "",
        "expires_at_0": "", "expires_at_1": "",
    }, follow=True)
    assert response.status_code == 200
    [key] = keys_in(response)
    obj = ApiKey.objects.get()
    assert (obj.owner, obj.name, obj.scopes) == (user, "CI deploys", "echo:write orders:read")
    assert key.split("_")[1] == obj.lookup_id
    assert content(response).count(key) == 1

    assert whoami(key) == 200
    issued = AuditEvent.objects.get(event="credential.issued")
    assert issued.detail["actor"] == "admin"
    assert issued.credential_id == obj.lookup_id

    secret = key.split("_")[2]
    for url in (reverse(CHANGELIST), change_url(obj), reverse(CHANGELIST) + f"?q={obj.lookup_id}",
                reverse("admin:django_apiauth_apikey_history", args=(obj.pk,))):
        page = content(admin_client.get(url))
        assert obj.lookup_id in page
        assert secret not in page
        assert obj.secret_hash not in page


def test_add_form_has_only_the_issue_fields(admin_client: Client) -> None:
    response = admin_client.get(reverse("admin:django_apiauth_apikey_add"))
    form = response.context["adminform"].form
    assert list(form.fields) == ["owner", "name", "scopes", "allowed_ips", "rate_limit",
                                 "not_before", "expires_at"]


def test_add_validates_scopes_networks_and_expiry(admin_client: Client, user: Any) -> None:
    response = admin_client.post(reverse("admin:django_apiauth_apikey_add"), {
        "owner": user.pk, "name": "bad", "scopes": 'a"b', "allowed_ips": "10.0.0.0/99",
        "expires_at_0": "2001-01-01", "expires_at_1": "00:00:00",
    })
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"scopes", "allowed_ips", "expires_at"}
    assert not ApiKey.objects.exists()


def test_change_form_shows_lookup_id_read_only_and_never_the_hash(
    admin_client: Client, api_key: tuple[ApiKey, str]
) -> None:
    obj, key = api_key
    response = admin_client.get(change_url(obj))
    page = content(response)
    assert list(response.context["adminform"].form.fields) == ["name", "scopes", "allowed_ips", "rate_limit",
                                                                 "expires_at"]
    assert obj.lookup_id in page
    assert 'name="lookup_id"' not in page
    assert obj.secret_hash not in page
    assert key not in page
    link = reverse(AUDIT_CHANGELIST) + f"?credential_id={obj.lookup_id}"
    assert f'href="{link}"' in page


def test_edit_changes_only_editable_fields(admin_client: Client, api_key: tuple[ApiKey, str]) -> None:
    obj, key = api_key
    lookup_id, secret_hash = obj.lookup_id, obj.secret_hash
    response = admin_client.post(change_url(obj), {
        "name": "renamed", "scopes": "echo:write extra", "allowed_ips": "",
        "expires_at_0": "", "expires_at_1": "",
        "lookup_id": "AAAAAAAAAAAA", "secret_hash": "0" * 64, "owner": "999",
        "revoked_at_0": "2001-01-01", "revoked_at_1": "00:00:00",
    })
    assert response.status_code == 302
    obj.refresh_from_db()
    assert (obj.name, obj.scopes) == ("renamed", "echo:write extra")
    assert (obj.lookup_id, obj.secret_hash, obj.revoked_at) == (lookup_id, secret_hash, None)
    assert whoami(key) == 200


def test_a_revoked_key_cannot_be_edited_or_revived(admin_client: Client, api_key: tuple[ApiKey, str]) -> None:
    obj, key = api_key
    lifecycle.revoke(obj, reason="leaked")
    response = admin_client.get(change_url(obj))
    assert list(response.context["adminform"].form.fields) == []
    admin_client.post(change_url(obj), {
        "name": "revived", "expires_at_0": "2999-01-01", "expires_at_1": "00:00:00",
    })
    obj.refresh_from_db()
    assert obj.name == "test key"
    assert obj.revoked_at is not None
    assert whoami(key) == 401


# -- rotate -------------------------------------------------------------------------


def test_rotate_asks_for_a_grace_period_then_shows_the_new_key_once(
    admin_client: Client, api_key: tuple[ApiKey, str]
) -> None:
    old, old_key = api_key
    first = admin_client.post(reverse(CHANGELIST), {
        "action": "rotate_selected", "index": "0", "_selected_action": [str(old.pk)],
    })
    assert first.status_code == 200
    assert first.context["form"]["grace"].value() == "1d"  # APIAUTH_ROTATION_GRACE default
    assert str(old) in content(first)
    assert not ApiKey.objects.filter(rotated_from=old).exists()

    response = run_action(admin_client, "rotate_selected", [old], grace="1h")
    [new_key] = keys_in(response)
    successor = ApiKey.objects.get(rotated_from=old)
    assert new_key.split("_")[1] == successor.lookup_id
    assert (successor.owner, successor.scopes) == (old.owner, old.scopes)
    old.refresh_from_db()
    assert timedelta(minutes=59) < old.expires_at - timezone.now() <= timedelta(hours=1)

    assert whoami(new_key) == 200
    assert whoami(old_key) == 200  # within the grace period
    with freeze_time(timezone.now() + timedelta(hours=1, seconds=1)):
        assert whoami(old_key) == 401
        assert whoami(new_key) == 200

    rotated = AuditEvent.objects.get(event="credential.rotated")
    assert rotated.detail["actor"] == "admin"
    assert rotated.detail["successor"] == successor.lookup_id
    for url in (reverse(CHANGELIST), change_url(successor), change_url(old)):
        assert new_key.split("_")[2] not in content(admin_client.get(url))


def test_rotate_rejects_a_bad_grace_and_skips_revoked_keys(
    admin_client: Client, make_api_key: MakeKey
) -> None:
    live, _ = make_api_key(name="live")
    dead, _ = make_api_key(name="dead")
    lifecycle.revoke(dead, reason="gone")
    for bad in ("soon", "-1h", "9999d"):
        response = run_action(admin_client, "rotate_selected", [live, dead], grace=bad)
        assert response.context["form"].errors["grace"], bad
    assert not ApiKey.objects.filter(rotated_from__isnull=False).exists()

    response = run_action(admin_client, "rotate_selected", [live, dead], grace="0s")
    assert len(keys_in(response)) == 1
    assert ApiKey.objects.filter(rotated_from=live).count() == 1
    assert not ApiKey.objects.filter(rotated_from=dead).exists()
    assert any("Skipped" in m and "dead" in m for m in warnings_of(response))


def test_a_key_in_its_grace_period_is_not_rotated_twice(
    admin_client: Client, api_key: tuple[ApiKey, str]
) -> None:
    old, _key = api_key
    run_action(admin_client, "rotate_selected", [old], grace="1h")
    successor = ApiKey.objects.get(rotated_from=old)
    response = run_action(admin_client, "rotate_selected", [old], grace="1h")
    assert keys_in(response) == []
    [skipped] = [m for m in warnings_of(response) if "Skipped" in m]
    assert successor.lookup_id in skipped
    assert ApiKey.objects.filter(rotated_from=old).count() == 1


# -- revoke ---------------------------------------------------------------------------


def test_revoke_requires_a_reason(admin_client: Client, api_key: tuple[ApiKey, str]) -> None:
    obj, key = api_key
    response = run_action(admin_client, "revoke_selected", [obj], reason="   ")
    assert response.context["form"].errors["reason"]
    obj.refresh_from_db()
    assert obj.revoked_at is None
    assert whoami(key) == 200

    response = run_action(admin_client, "revoke_selected", [obj], reason="leaked in CI logs")
    assert response.status_code == 200
    obj.refresh_from_db()
    assert obj.revoked_at is not None
    assert obj.revoked_reason == "leaked in CI logs"
    assert whoami(key) == 401
    revoked = AuditEvent.objects.get(event="credential.revoked")
    assert revoked.detail["actor"] == "admin"
    assert revoked.detail["reason"] == "leaked in CI logs"

    response = run_action(admin_client, "revoke_selected", [obj], reason="again")
    assert any("Skipped" in m for m in warnings_of(response))
    assert AuditEvent.objects.filter(event="credential.revoked").count() == 1


def test_rotating_needs_the_add_permission_too(make_user: Callable[..., Any],
                                               api_key: tuple[ApiKey, str]) -> None:
    editor = make_user("editor", is_staff=True)
    editor.user_permissions.add(Permission.objects.get(codename="view_apikey"),
                                Permission.objects.get(codename="change_apikey"))
    request = RequestFactory().get("/admin/")
    request.user = editor
    actions = dict(ApiKeyAdmin(ApiKey, admin.site).get_action_choices(request))
    assert "revoke_selected" in actions
    assert "rotate_selected" not in actions  # rotating issues keys
    browser = Client()
    browser.force_login(editor)
    obj, _key = api_key
    browser.post(reverse(CHANGELIST), {
        "action": "rotate_selected", "_selected_action": [str(obj.pk)], "confirm": "yes", "grace": "1h",
    })
    assert not ApiKey.objects.filter(rotated_from=obj).exists()


# -- list ---------------------------------------------------------------------------


@pytest.fixture
def keys_in_every_state(make_api_key: MakeKey) -> dict[str, ApiKey]:
    now = timezone.now()
    keys = {
        "active": make_api_key(name="active")[0],
        "forever": make_api_key(name="forever")[0],
        "expiring": make_api_key(name="expiring", expires_at=now + timedelta(days=2))[0],
        "expired": make_api_key(name="expired")[0],
        "revoked": make_api_key(name="revoked")[0],
        "not_yet_valid": make_api_key(name="not_yet_valid", not_before=now + timedelta(days=1))[0],
    }
    keys["active"].expires_at = now + timedelta(days=30)
    keys["active"].save()
    keys["expired"].expires_at = now - timedelta(seconds=1)
    keys["expired"].save()
    lifecycle.revoke(keys["revoked"], reason="test")
    return keys


@pytest.mark.parametrize(("state", "expected"), [
    ("active", {"active", "forever", "expiring"}),
    ("expiring", {"expiring"}),
    ("expired", {"expired"}),
    ("revoked", {"revoked"}),
    ("not_yet_valid", {"not_yet_valid"}),
    (None, {"active", "forever", "expiring", "expired", "revoked", "not_yet_valid"}),
])
def test_state_filter(admin_client: Client, keys_in_every_state: dict[str, ApiKey],
                      state: str | None, expected: set[str]) -> None:
    query = {"state": state} if state else {}
    response = admin_client.get(reverse(CHANGELIST), query)
    assert response.status_code == 200
    assert {obj.name for obj in response.context["cl"].result_list} == expected


def test_list_shows_state_and_escapes_names(admin_client: Client, keys_in_every_state: dict[str, ApiKey],
                                            make_api_key: MakeKey) -> None:
    make_api_key(name="<script>alert(1)</script>")
    page = content(admin_client.get(reverse(CHANGELIST)))
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    model_admin = ApiKeyAdmin(ApiKey, admin.site)
    states = {name: model_admin.state_display(obj) for name, obj in keys_in_every_state.items()}
    assert states == {
        "active": "active", "forever": "active", "expiring": "expiring soon", "expired": "expired",
        "revoked": "revoked", "not_yet_valid": "not yet valid",
    }
    for label in ("expiring soon", "not yet valid"):
        assert f"<td class=\"field-state_display\">{label}</td>" in page


def test_search_by_name_lookup_id_and_owner(admin_client: Client, make_api_key: MakeKey,
                                            make_user: Callable[..., Any]) -> None:
    mine, _ = make_api_key(name="deploy bot")
    theirs, _ = make_api_key(owner=make_user("bob"), name="other")
    for term, expected in (("deploy", mine), (mine.lookup_id[:6], mine), ("bob", theirs)):
        response = admin_client.get(reverse(CHANGELIST), {"q": term})
        assert list(response.context["cl"].result_list) == [expected], term


# -- audit --------------------------------------------------------------------------


def _event(**fields: Any) -> None:
    audit.record(**{
        "event": "authenticate", "scheme": "api_key", "outcome": "failure", "reason": "bad_secret",
        **fields,
    })


def test_audit_admin_is_read_only_even_for_superusers(admin_client: Client, user: Any) -> None:
    _event(user=user, credential_id="abc")
    row = AuditEvent.objects.get()
    add = reverse("admin:django_apiauth_auditevent_add")
    change = change_url(row)
    delete = reverse("admin:django_apiauth_auditevent_delete", args=(row.pk,))
    assert admin_client.get(add).status_code == 403
    assert admin_client.post(add, {"reason": "ok", "outcome": "success"}).status_code == 403
    assert admin_client.post(change, {"reason": "ok"}).status_code == 403
    assert admin_client.get(delete).status_code == 403
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    response = admin_client.post(reverse(AUDIT_CHANGELIST), {
        "action": "delete_selected", "index": "0", "_selected_action": [str(row.pk)], "post": "yes",
    })
    assert response.status_code in (200, 302)
    assert AuditEvent.objects.filter(pk=row.pk, reason="bad_secret").exists()

    view = admin_client.get(change)
    assert view.status_code == 200
    assert "bad_secret" in content(view)
    assert not view.context["adminform"].form.fields
    assert 'name="_save"' not in content(view)
    changelist = admin_client.get(reverse(AUDIT_CHANGELIST))
    assert changelist.context["action_form"] is None  # no delete_selected, no actions at all
    assert "delete_selected" not in content(changelist)
    assert f'href="{add}"' not in content(changelist)


def test_view_permission_is_enough_to_read_the_audit(make_user: Callable[..., Any]) -> None:
    _event()
    auditor = make_user("auditor", is_staff=True)
    browser = Client()
    browser.force_login(auditor)
    assert browser.get(reverse(AUDIT_CHANGELIST)).status_code == 403
    auditor.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    assert browser.get(reverse(AUDIT_CHANGELIST)).status_code == 200
    assert browser.get(change_url(AuditEvent.objects.get())).status_code == 200


def _audit_queries(client: Client, query: dict[str, str]) -> tuple[Any, list[str]]:
    table = AuditEvent._meta.db_table
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse(AUDIT_CHANGELIST), query)
    return response, [q["sql"] for q in captured.captured_queries if table in q["sql"]]


@pytest.mark.parametrize("query", [
    {},
    {"outcome__exact": "failure", "scheme": "api_key", "reason": "bad_secret", "event": "authenticate"},
    {"username": "alice", "credential_id": "abc"},
    {"q": "alice"},
    {"q": "10.0.0.1"},
    {"at__year": "2030"},
    {"p": "2"},
    {"all": ""},
    {"_facets": "True"},
    {"o": "-1"},
])
def test_audit_list_never_runs_an_unbounded_count(
    admin_client: Client, user: Any, query: dict[str, str]
) -> None:
    for i in range(120):
        _event(user=user, credential_id="abc", ip=f"10.0.0.{i % 3}")
    response, queries = _audit_queries(admin_client, query)
    assert response.status_code == 200, query
    assert queries
    counts = [sql for sql in queries if "COUNT(" in sql.upper()]
    assert counts  # the paginator's capped count
    for sql in counts:
        assert re.search(r"COUNT\(\*\) FROM \(SELECT .* LIMIT 10001\) subquery$", sql), sql
    for sql in queries:  # nor a DISTINCT over the table (filter choices, date hierarchy)
        assert "DISTINCT" not in sql.upper(), sql
    assert not response.context["cl"].show_full_result_count
    assert 'id="changelist-filter"' in content(response)


def test_audit_filters_and_search(admin_client: Client, make_user: Callable[..., Any]) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    _event(user=alice, credential_id="AAAAAAAAAAAA", ip="192.0.2.1")
    _event(user=bob, credential_id="BBBBBBBBBBBB", ip="192.0.2.2", scheme="hmac", outcome="success",
           reason="ok")
    _event(user=None, credential_id="", ip="2001:db8::1", reason="malformed")

    def reasons_for(**query: str) -> set[str]:
        response = admin_client.get(reverse(AUDIT_CHANGELIST), query)
        assert response.status_code == 200, query
        return {(row.username or "-") + ":" + row.reason for row in response.context["cl"].result_list}

    assert reasons_for(scheme="hmac") == {"bob:ok"}
    assert reasons_for(outcome__exact="failure") == {"alice:bad_secret", "-:malformed"}
    assert reasons_for(reason="malformed") == {"-:malformed"}
    assert reasons_for(username="alice") == {"alice:bad_secret"}
    assert reasons_for(credential_id="BBBBBBBBBBBB") == {"bob:ok"}
    assert reasons_for(q="BBBBBBBBBBBB") == {"bob:ok"}
    assert reasons_for(q="bbbbbbbbbbbb") == set()  # exact: ids are case-sensitive
    assert reasons_for(q="ali") == {"alice:bad_secret"}
    assert reasons_for(q="2001:db8::1") == {"-:malformed"}
    assert reasons_for(q="192.0.2.2") == {"bob:ok"}

    # A deleted user's rows are still found by the kept username (no FK constraint).
    AuditEvent.objects.filter(user=bob).update(user_id=bob.pk + 1000, username="ghost")
    assert reasons_for(username="ghost") == {"ghost:ok"}
    assert reasons_for(username="bob") == set()

    page = content(admin_client.get(reverse(AUDIT_CHANGELIST), {"username": "alice", "scheme": "api_key"}))
    assert 'name="username" value="alice"' in page  # the input filter keeps its value
    assert '<input type="hidden" name="scheme" value="api_key">' in page  # and the other filters


def test_audit_link_from_a_key_lists_its_events(admin_client: Client, api_key: tuple[ApiKey, str],
                                                make_api_key: MakeKey) -> None:
    obj, key = api_key
    _other, other_key = make_api_key(name="other")
    assert whoami(key) == 200
    assert whoami(other_key) == 200
    response = admin_client.get(reverse(AUDIT_CHANGELIST), {"credential_id": obj.lookup_id})
    rows = list(response.context["cl"].result_list)
    assert {row.event for row in rows} == {"credential.issued", "authenticate"}
    assert {row.credential_id for row in rows} == {obj.lookup_id}


def test_audit_values_are_escaped(admin_client: Client) -> None:
    _event(credential_id="<b>x</b>", reason="<img src=x onerror=alert(1)>")
    AuditEvent.objects.update(path="/<script>alert(1)</script>", detail={"note": "<script>x</script>"})
    row = AuditEvent.objects.get()
    for url in (reverse(AUDIT_CHANGELIST), change_url(row)):
        page = content(admin_client.get(url))
        assert "<script>" not in page.replace('<script src=', "").split("</head>", 1)[1]
        assert "<img src=x" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_date_hierarchy_drills_down_from_years_to_days(admin_client: Client) -> None:
    for at in ("2024-12-31T10:00:00Z", "2025-01-15T10:00:00Z", "2025-03-02T10:00:00Z",
               "2025-03-04T23:00:00Z"):
        _event(at=datetime.fromisoformat(at))

    def links(**query: str) -> list[str]:
        response = admin_client.get(reverse(AUDIT_CHANGELIST), query)
        assert response.status_code == 200
        nav = re.search(r'<nav class="toplinks">(.*?)</nav>', content(response), re.S)
        assert nav, query
        return re.findall(r'<a href="[^"]*">([^<]*)</a>', nav.group(1))

    assert links() == ["2024", "2025"]
    # The calendar range between the first and last event (no DISTINCT scan).
    assert links(at__year="2025") == ["January 2025", "February 2025", "March 2025"]
    assert links(at__year="2025", at__month="3") == ["March 2", "March 3", "March 4"]
    response = admin_client.get(reverse(AUDIT_CHANGELIST), {"at__year": "2025", "at__month": "3",
                                                            "at__day": "4"})
    assert len(response.context["cl"].result_list) == 1


def test_capped_count_pages_the_first_rows_and_says_so(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CappedCountPaginator, "count_cap", 5)
    monkeypatch.setattr(AuditEventAdmin, "list_per_page", 2)
    for _ in range(8):
        _event()
    response = admin_client.get(reverse(AUDIT_CHANGELIST))
    cl = response.context["cl"]
    assert (cl.result_count, cl.count_is_capped) == (5, True)
    assert "more than 5 audit events" in content(response)
    assert admin_client.get(reverse(AUDIT_CHANGELIST), {"p": "3"}).status_code == 200
    assert admin_client.get(reverse(AUDIT_CHANGELIST), {"p": "4"}).status_code == 302  # beyond the cap

    monkeypatch.setattr(CappedCountPaginator, "count_cap", 50)
    response = admin_client.get(reverse(AUDIT_CHANGELIST))
    assert (response.context["cl"].result_count, response.context["cl"].count_is_capped) == (8, False)
    assert "8 audit events" in content(response)


# -- access ----------------------------------------------------------------------------


@pytest.mark.parametrize("is_staff", [False, True])
def test_users_without_admin_rights_cannot_reach_the_pages(
    make_user: Callable[..., Any], api_key: tuple[ApiKey, str], is_staff: bool
) -> None:
    obj, _key = api_key
    _event()
    browser = Client()
    browser.force_login(make_user("mallory", is_staff=is_staff))
    urls = [
        reverse(CHANGELIST), reverse("admin:django_apiauth_apikey_add"), change_url(obj),
        reverse(AUDIT_CHANGELIST), change_url(AuditEvent.objects.first()),
    ]
    for url in urls:
        response = browser.get(url)
        if is_staff:
            assert response.status_code == 403, url
        else:
            assert response.status_code == 302, url
            assert response["Location"].startswith(reverse("admin:login"))
    response = browser.post(reverse(CHANGELIST), {
        "action": "revoke_selected", "_selected_action": [str(obj.pk)], "confirm": "yes", "reason": "x",
    })
    assert response.status_code in (302, 403)
    obj.refresh_from_db()
    assert obj.revoked_at is None
