"""The audit console pages: access, overview charts, list, filters, paging, detail, timelines."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_apiauth.audit import queries
from django_apiauth.models import AuditEvent

pytestmark = pytest.mark.django_db

OVERVIEW = "/auth/audit/"
EVENTS = "/auth/audit/events/"


# -- access -------------------------------------------------------------------------


def test_urls_are_where_the_docs_say() -> None:
    assert reverse("django_apiauth:audit:overview") == OVERVIEW
    assert reverse("django_apiauth:audit:events") == EVENTS


def test_index_redirects_to_the_overview(staff_client: Client) -> None:
    response = staff_client.get("/auth/")
    assert response.status_code == 302
    assert response["Location"] == OVERVIEW


@pytest.mark.parametrize("url", [
    OVERVIEW, EVENTS, "/auth/audit/events/1/", "/auth/audit/export/csv/", "/auth/audit/credentials/",
    "/auth/audit/credential/abc/", "/auth/audit/user/1/",
])
def test_anonymous_is_sent_to_the_admin_login(url: str) -> None:
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")


@pytest.mark.parametrize("url", [
    OVERVIEW, EVENTS, "/auth/audit/events/1/", "/auth/audit/export/jsonl/", "/auth/audit/credentials/",
    "/auth/audit/credential/abc/", "/auth/audit/user/1/",
])
@pytest.mark.parametrize("kind", ["not_staff", "staff_without_permission", "inactive"])
def test_others_are_refused(url: str, kind: str, make_user: Callable[..., Any]) -> None:
    fields = {"not_staff": {}, "staff_without_permission": {"is_staff": True},
              "inactive": {"is_staff": True, "is_superuser": True}}[kind]
    user = make_user("someone", **fields)
    client = Client()
    client.force_login(user)
    if kind == "inactive":
        user.is_active = False
        user.save()
    response = client.get(url)
    if kind == "inactive":  # the session of a deactivated user is anonymous again
        assert response.status_code == 302
    else:
        assert response.status_code == 403


def test_superuser_may_see_everything(admin_client_: Client) -> None:
    assert admin_client_.get(OVERVIEW).status_code == 200


def test_pages_are_not_cached(staff_client: Client) -> None:
    response = staff_client.get(EVENTS)
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


# -- overview -----------------------------------------------------------------------


def test_overview_renders_the_four_charts(staff_client: Client, make_event: Callable[..., Any]) -> None:
    for i in range(5):
        make_event(outcome="success", reason="ok", credential_id="keyA", ip="10.0.0.1",
                   ago=timedelta(minutes=10 * i))
    make_event(reason="bad_secret", credential_id="keyA", ip="203.0.113.9")
    make_event(reason="unknown_credential", credential_id="keyB", ip="203.0.113.9")
    response = staff_client.get(OVERVIEW)
    assert response.status_code == 200
    html = response.content.decode()
    for chart in ("chart-attempts", "chart-reasons", "chart-ips", "chart-credentials"):
        assert f'id="{chart}"' in html
    assert html.count('class="apiauth-chart"') == 4
    assert "<script" not in html.split('id="chart-attempts"')[1].split("</svg>")[0]
    assert "203.0.113.9" in html and "bad_secret" in html and "keyA" in html
    assert response.context["total"] == 7
    assert response.context["failures"] == 2
    # bars link to the filtered list
    assert "outcome=failure&amp;reason=bad_secret" in html


@pytest.mark.parametrize("range_key", ["1h", "24h", "7d", "30d"])
def test_overview_ranges(staff_client: Client, make_event: Callable[..., Any], range_key: str) -> None:
    make_event(ago=timedelta(minutes=30))
    make_event(ago=timedelta(days=20))
    response = staff_client.get(OVERVIEW, {"range": range_key})
    assert response.status_code == 200
    expected = {"1h": 1, "24h": 1, "7d": 1, "30d": 2}[range_key]
    assert response.context["total"] == expected


def test_overview_is_capped(staff_client: Client, make_event: Callable[..., Any]) -> None:
    for i in range(6):
        make_event(ago=timedelta(minutes=i + 1))
    data = queries.overview("24h", row_cap=4)
    assert data.capped_since is not None
    assert data.total == 4


def test_overview_never_counts_the_whole_table(staff_client: Client, make_event: Callable[..., Any]) -> None:
    make_event()
    with CaptureQueriesContext(connection) as captured:
        assert staff_client.get(OVERVIEW).status_code == 200
    audit_queries = [q["sql"] for q in captured.captured_queries if "auditevent" in q["sql"]]
    assert audit_queries
    for sql in audit_queries:
        # every audit query is bounded by the window (or is the LIMIT probe)
        assert '"at" >=' in sql or '"at" >' in sql, sql


# -- list, filters, paging ------------------------------------------------------------


def test_list_filters(staff_client: Client, make_event: Callable[..., Any],
                      make_user: Callable[..., Any]) -> None:
    bob = make_user("bob")
    make_event(outcome="success", reason="ok", scheme="hmac", credential_id="hk_1", user=bob, username="bob",
               ip="10.1.1.1", path="/api/orders/")
    make_event(reason="expired", scheme="api_key", credential_id="k2", ip="10.2.2.2", path="/api/echo/")
    make_event(reason="bad_signature", scheme="hmac", credential_id="hk_1", ip="10.2.2.2",
               path="/api/100%_/x")

    def ids(**params: Any) -> set[str]:
        response = staff_client.get(EVENTS, params)
        assert response.status_code == 200, response.content
        return {row["credential_id"] + ":" + row["reason"] for row in response.context["rows"]}

    assert len(ids()) == 3
    assert ids(outcome="success") == {"hk_1:ok"}
    assert ids(scheme="hmac", outcome="failure") == {"hk_1:bad_signature"}
    assert ids(reason="expired") == {"k2:expired"}
    assert ids(credential="hk_1") == {"hk_1:ok", "hk_1:bad_signature"}
    assert ids(user="bob") == {"hk_1:ok"}
    assert ids(ip="10.2.2.2") == {"k2:expired", "hk_1:bad_signature"}
    assert ids(q="echo") == {"k2:expired"}
    assert ids(q="%") == {"hk_1:bad_signature"}  # literal, not a wildcard
    assert ids(q="_") == {"hk_1:bad_signature"}
    assert ids(event="credential.issued") == set()
    assert ids(user="nobody") == set()


def test_list_time_range(staff_client: Client, make_event: Callable[..., Any]) -> None:
    make_event(credential_id="recent", ago=timedelta(hours=2))
    make_event(credential_id="old", ago=timedelta(days=10))
    default = staff_client.get(EVENTS).context["rows"]
    assert [r["credential_id"] for r in default] == ["recent"]  # default: last 7 days
    everything = staff_client.get(EVENTS, {"range": "all"}).context["rows"]
    assert [r["credential_id"] for r in everything] == ["recent", "old"]
    hour = staff_client.get(EVENTS, {"range": "1h"}).context["rows"]
    assert hour == []
    since = (AuditEvent.objects.get(credential_id="old").at - timedelta(minutes=1))
    fmt = "%Y-%m-%dT%H:%M:%S"
    explicit = staff_client.get(EVENTS, {"since": since.strftime(fmt),
                                          "until": (since + timedelta(hours=1)).strftime(fmt)})
    assert [r["credential_id"] for r in explicit.context["rows"]] == ["old"]


def test_credential_filter_needs_no_window(staff_client: Client, make_event: Callable[..., Any]) -> None:
    make_event(credential_id="ancient", ago=timedelta(days=400))
    rows = staff_client.get(EVENTS, {"credential": "ancient"}).context["rows"]
    assert len(rows) == 1


def test_keyset_paging_walks_every_row_once(staff_client: Client, make_event: Callable[..., Any],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from django_apiauth.audit import views

    monkeypatch.setattr(views, "PER_PAGE", 3)
    same = AuditEvent.objects.create(at=AuditEvent._meta.get_field("at").default(), event="authenticate",
                                     outcome="failure", reason="x", credential_id="tie0")
    for i in range(1, 4):  # rows with the same timestamp: the id breaks the tie
        AuditEvent.objects.create(at=same.at, event="authenticate", outcome="failure", reason="x",
                                  credential_id=f"tie{i}")
    for i in range(4):
        make_event(credential_id=f"e{i}", ago=timedelta(minutes=i + 1))
    seen: list[str] = []
    url = EVENTS
    pages = 0
    while url:
        response = staff_client.get(url if url.startswith("/") else EVENTS + url)
        assert response.status_code == 200
        seen.extend(r["credential_id"] for r in response.context["rows"])
        url = response.context["older_url"]
        pages += 1
    assert pages == 3
    assert seen == ["tie3", "tie2", "tie1", "tie0", "e0", "e1", "e2", "e3"]


def test_paging_back_and_forth(staff_client: Client, make_event: Callable[..., Any],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from django_apiauth.audit import views

    monkeypatch.setattr(views, "PER_PAGE", 2)
    for i in range(5):
        make_event(credential_id=f"e{i}", ago=timedelta(minutes=i + 1))
    first = staff_client.get(EVENTS)
    assert [r["credential_id"] for r in first.context["rows"]] == ["e0", "e1"]
    assert first.context["newer_url"] == ""
    second = staff_client.get(EVENTS + first.context["older_url"])
    assert [r["credential_id"] for r in second.context["rows"]] == ["e2", "e3"]
    back = staff_client.get(EVENTS + second.context["newer_url"])
    assert [r["credential_id"] for r in back.context["rows"]] == ["e0", "e1"]
    assert back.context["newer_url"] == ""
    third = staff_client.get(EVENTS + second.context["older_url"])
    assert [r["credential_id"] for r in third.context["rows"]] == ["e4"]
    assert third.context["older_url"] == ""


def test_list_runs_no_count_and_no_offset(staff_client: Client, make_event: Callable[..., Any]) -> None:
    for i in range(3):
        make_event(ago=timedelta(minutes=i))
    with CaptureQueriesContext(connection) as captured:
        response = staff_client.get(EVENTS, {"outcome": "failure", "reason": "bad_secret"})
    assert response.status_code == 200
    sqls = [q["sql"].upper() for q in captured.captured_queries if "AUDITEVENT" in q["sql"].upper()]
    assert sqls
    assert not any("COUNT(" in sql for sql in sqls)
    assert not any("OFFSET" in sql for sql in sqls)


def test_list_filter_uses_an_index(make_event: Callable[..., Any]) -> None:
    """SQLite's plan for the filters the charts link to names one of the audit indexes."""
    from django_apiauth.audit.filters import AuditFilterForm

    for params, index in [
        ({"credential": "k"}, "apiauth_audit_credential"),
        ({"outcome": "failure", "reason": "expired"}, "apiauth_audit_"),
        ({"outcome": "failure", "ip": "10.0.0.1"}, "apiauth_audit_"),
        ({}, "apiauth_audit_at"),
    ]:
        form = AuditFilterForm(params)
        assert form.is_valid()
        qs = form.apply(AuditEvent.objects.all()).order_by("-at", "-id")[:51]
        plan = qs.explain()
        assert index in plan, (params, plan)


# -- detail and timelines ------------------------------------------------------------


def test_event_detail(staff_client: Client, make_event: Callable[..., Any]) -> None:
    event = make_event(detail={"parameter": "api_key", "nested": {"x": "\u202e"}}, user_agent="curl/8")
    response = staff_client.get(f"/auth/audit/events/{event.id}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "curl/8" in html
    assert "\\\\u202E" in html or "\\u202e" in html.lower()
    assert "\u202e" not in html


@pytest.mark.parametrize("pk", ["999999", str(2**63), str(10**40)])
def test_event_detail_unknown_or_huge_id_is_404(staff_client: Client, pk: str) -> None:
    assert staff_client.get(f"/auth/audit/events/{pk}/").status_code == 404


def test_credential_timeline(staff_client: Client, make_event: Callable[..., Any],
                             api_key: tuple[Any, str]) -> None:
    key, _secret = api_key
    make_event(credential_id=key.lookup_id, ago=timedelta(days=100))
    make_event(credential_id="other")
    response = staff_client.get(f"/auth/audit/credential/{key.lookup_id}/")
    assert response.status_code == 200
    ids = {r["credential_id"] for r in response.context["rows"]}
    assert ids == {key.lookup_id}
    reasons = [r["reason"] for r in response.context["rows"]]
    assert "issued" in reasons and "bad_secret" in reasons  # all time by default
    assert response.context["credential"]["name"] == "test key"


def test_credential_timeline_of_a_deleted_credential(staff_client: Client,
                                                     make_event: Callable[..., Any]) -> None:
    make_event(credential_id="gone123")
    response = staff_client.get("/auth/audit/credential/gone123/")
    assert response.status_code == 200
    assert response.context["credential"] is None
    assert len(response.context["rows"]) == 1


def test_user_timeline(staff_client: Client, make_event: Callable[..., Any], user: Any,
                       api_key: tuple[Any, str]) -> None:
    make_event(user=user, username=user.username, ago=timedelta(days=300))
    response = staff_client.get(f"/auth/audit/user/{user.pk}/")
    assert response.status_code == 200
    assert {r["username"] for r in response.context["rows"]} == {"alice"}
    assert len(response.context["rows"]) == 2  # the issue row and the old failure
    assert [c["public_id"] for c in response.context["owned"]] == [api_key[0].lookup_id]


def test_user_timeline_of_a_deleted_user(staff_client: Client, make_event: Callable[..., Any]) -> None:
    make_event(user_id=424242, username="ghost")
    response = staff_client.get("/auth/audit/user/424242/")
    assert response.status_code == 200
    assert [r["username"] for r in response.context["rows"]] == ["ghost"]
    assert staff_client.get(f"/auth/audit/user/{10**30}/").status_code == 404


# -- links from the admin -------------------------------------------------------------


def test_admin_links_to_the_timelines(admin_client_: Client, api_key: tuple[Any, str], user: Any) -> None:
    key, _secret = api_key
    change = admin_client_.get(f"/admin/django_apiauth/apikey/{key.pk}/change/").content.decode()
    assert f'href="/auth/audit/credential/{key.lookup_id}/"' in change
    assert f'href="/auth/audit/user/{user.pk}/"' in change
    listing = admin_client_.get("/admin/django_apiauth/apikey/").content.decode()
    assert f'href="/auth/audit/credential/{key.lookup_id}/"' in listing
    event = AuditEvent.objects.get(credential_id=key.lookup_id)
    detail = admin_client_.get(f"/admin/django_apiauth/auditevent/{event.pk}/change/").content.decode()
    assert f'href="/auth/audit/events/{event.pk}/"' in detail
    assert f'href="/auth/audit/user/{user.pk}/"' in detail


def test_user_filter_window(staff_client: Client, make_event: Callable[..., Any], user: Any) -> None:
    """An existing user is found through the (user, at) index over all time; a deleted user's
    rows (unindexed ``username``) keep the default window unless a range is chosen."""
    make_event(user=user, username="alice", ago=timedelta(days=100))
    make_event(user_id=999, username="ghost", ago=timedelta(days=100))
    assert len(staff_client.get(EVENTS, {"user": "alice"}).context["rows"]) == 1
    assert staff_client.get(EVENTS, {"user": "ghost"}).context["rows"] == []
    assert len(staff_client.get(EVENTS, {"user": "ghost", "range": "all"}).context["rows"]) == 1
