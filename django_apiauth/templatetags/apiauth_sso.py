"""``{% apiauth_sso_buttons next %}``: the "Sign in with <provider>" buttons."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import template

from ..sso.providers import active_providers

register = template.Library()


@register.inclusion_tag("django_apiauth/sso/buttons.html", takes_context=True)
def apiauth_sso_buttons(context: template.Context, next_url: str = "") -> dict[str, Any]:
    from ..sso.identity import safe_next

    request = context.get("request")
    checked = safe_next(request, next_url) if (request is not None and next_url) else ""
    query = "?" + urlencode({"next": checked}) if checked else ""
    return {"buttons": [(p, p.login_url() + query) for p in active_providers()]}
