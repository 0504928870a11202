"""The admin and the audit console in a real browser (headless Chromium).

Covers issue 7 item 7: issuing an API key in the admin shows the secret
exactly once; revoking it; the audit overview renders its charts (screenshot:
``test-artifacts/audit-overview.png``); filters and export work; a non-staff
user is refused.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from django_apiauth.models import ApiKey, AuditEvent

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple 42"
KEY_RE = re.compile(r"ak_[A-Za-z0-9_]+")


@pytest.fixture
def admin_user(transactional_db: Any) -> Any:
    return get_user_model().objects.create_superuser("admin", "admin@example.com", PASSWORD)


@pytest.fixture
def owner(transactional_db: Any) -> Any:
    return get_user_model().objects.create_user("billing")


def login(page: Any, username: str = "admin", password: str = PASSWORD) -> None:
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")


def whoami(live_server: Any, key: str) -> int:
    return requests.get(f"{live_server.url}/api/whoami/", headers={"Authorization": f"Api-Key {key}"},
                        timeout=10).status_code


def test_issue_api_key_shows_the_secret_once_then_revoke(
    page: Any, live_server: Any, admin_user: Any, owner: Any, artifacts_dir: Path,
) -> None:
    login(page)
    page.goto("/admin/django_apiauth/apikey/add/")
    page.fill("#id_owner", str(owner.pk))
    page.fill("#id_name", "browser key")
    page.fill("#id_scopes", "echo:write")
    page.click("input[name=_save]")
    page.wait_for_url("**/admin/django_apiauth/apikey/")
    message = page.locator(".messagelist .warning")
    assert message.count() == 1
    shown = KEY_RE.findall(message.inner_text())
    assert len(shown) == 1
    key = shown[0]
    assert whoami(live_server, key) == 200

    # Gone on reload, and on every other page.
    page.reload()
    assert key not in page.content()
    assert page.locator(".messagelist .warning").count() == 0
    # (the artefact shows the list after the reload: no secret in a CI artefact)
    page.screenshot(path=str(artifacts_dir / "admin-api-key-after-reload.png"))
    api_key = ApiKey.objects.get(name="browser key")
    page.goto(f"/admin/django_apiauth/apikey/{api_key.pk}/change/")
    assert key not in page.content()
    assert api_key.lookup_id in page.content()  # the public id is shown, the secret is not
    page.goto("/auth/audit/events/")
    assert key not in page.content()

    # Revoke it with the admin action and its confirmation page.
    page.goto("/admin/django_apiauth/apikey/")
    page.check(f"input[name=_selected_action][value='{api_key.pk}']")
    page.select_option("select[name=action]", "revoke_selected")
    page.click("button[name=index]")
    page.fill("#id_reason", "browser test")
    page.click("input[type=submit].default")
    page.wait_for_url("**/admin/django_apiauth/apikey/")
    assert "Revoked 1 API key." in page.locator(".messagelist").inner_text()
    api_key.refresh_from_db()
    assert api_key.revoked_reason == "browser test"
    assert whoami(live_server, key) == 401


def _seed(owner: Any) -> None:
    now = timezone.now()
    rows = []
    reasons = ["bad_secret", "unknown_credential", "expired", "revoked", "malformed"]
    for i in range(240):
        failed = i % 3 == 0
        rows.append(AuditEvent(
            at=now - timedelta(minutes=6 * i), event="authenticate",
            scheme=["api_key", "hmac", "client_cert"][i % 3],
            outcome="failure" if failed else "success",
            reason=reasons[i % 5] if failed else "ok",
            user=None if failed else owner, username="" if failed else owner.username,
            credential_id=f"key{i % 7}", ip=f"203.0.113.{i % 11}" if failed else "10.0.0.5",
            method="GET", path=f"/api/orders/{i}/",
        ))
    AuditEvent.objects.bulk_create(rows)


def test_audit_overview_renders_its_charts(page: Any, admin_user: Any, owner: Any,
                                           artifacts_dir: Path) -> None:
    _seed(owner)
    login(page)
    page.goto("/auth/audit/")
    charts = page.locator("svg.apiauth-chart")
    assert charts.count() == 4
    for chart in ("#chart-attempts", "#chart-reasons", "#chart-ips", "#chart-credentials"):
        box = page.locator(chart).bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 30, chart
        assert page.locator(f"{chart} rect").count() > 0
    assert page.locator("#stat-total").inner_text() == "240"
    assert page.locator("#stat-failures").inner_text() == "80"
    page.screenshot(path=str(artifacts_dir / "audit-overview.png"), full_page=True)
    # A reason bar leads to the list filtered to it.
    page.locator("#chart-reasons a").first.click()
    page.wait_for_url(re.compile(r".*/auth/audit/events/\?.*reason=.*"))
    assert page.locator("#result_list tbody tr").count() > 0


def test_filters_and_export(page: Any, admin_user: Any, owner: Any, artifacts_dir: Path) -> None:
    _seed(owner)
    login(page)
    page.goto("/auth/audit/events/")
    assert page.locator("#result_list tbody tr").count() == 50  # one page
    page.select_option("#id_outcome", "failure")
    page.fill("#id_reason", "expired")
    page.click("#audit-filters input[type=submit]")
    page.wait_for_url(re.compile(r".*outcome=failure.*"))
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 16  # 80 failures, one reason in five
    assert set(page.locator("#result_list tbody tr td:nth-child(5)").all_inner_texts()) == {"expired"}
    page.screenshot(path=str(artifacts_dir / "audit-events-filtered.png"), full_page=True)

    with page.expect_download() as download_info:
        page.click("#export-csv")
    csv_text = Path(download_info.value.path()).read_text()
    lines = [line for line in csv_text.splitlines() if line]
    assert lines[0].startswith("id,at,event,scheme,outcome,reason")
    assert len(lines) == 17
    assert all(",failure,expired," in line for line in lines[1:])

    with page.expect_download() as download_info:
        page.click("#export-jsonl")
    objs = [json.loads(line) for line in Path(download_info.value.path()).read_text().splitlines()]
    assert len(objs) == 16 and {o["reason"] for o in objs} == {"expired"}

    # Paging: the next page of the unfiltered list, then back.
    page.goto("/auth/audit/events/")
    first = page.locator("#result_list tbody tr td:first-child").first.inner_text()
    page.click("#page-older")
    assert page.locator("#result_list tbody tr td:first-child").first.inner_text() != first
    page.click("#page-newer")
    assert page.locator("#result_list tbody tr td:first-child").first.inner_text() == first

    # A bad filter is refused with 400, not a server error.
    response = page.goto("/auth/audit/events/?ip=999.1.1.1&since=yesterday")
    assert response is not None and response.status == 400
    assert page.locator(".errorlist").count() >= 2


def test_non_staff_user_is_refused(page: Any, live_server: Any, owner: Any) -> None:
    # Anonymous: sent to the admin login.
    response = page.goto("/auth/audit/")
    assert response is not None
    assert "/admin/login/" in page.url
    # A logged-in user without staff status: 403 on every console page.
    client = Client()
    client.force_login(owner)
    page.context.add_cookies([{
        "name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url,
    }])
    for url in ("/auth/audit/", "/auth/audit/events/", "/auth/audit/credentials/",
                "/auth/audit/export/csv/"):
        response = page.goto(url)
        assert response is not None and response.status == 403, url
    # And the admin does not let them in either.
    page.goto("/admin/")
    assert "/admin/login/" in page.url
