#!/usr/bin/env python
"""Per-request cost of the rate-limit / lockout guard (docs/rate-limits.md#cost).

Times ``ApiKeyAuthentication().authenticate()`` in one process (in-memory
SQLite, audit of successes off so the guard is not hidden behind an INSERT)
with the guard off, with the defaults (lockout + new-address alert: one
``get_many``), and with a rate limit (one more atomic increment); with
``--redis URL`` also against a real Redis. Variants are interleaved round by
round; CPU time (``time.process_time``) of the best of three batches per
round, then the minimum and median over rounds.

    .venv/bin/python benchmarks/guard_cost.py [--rounds 10] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=300)
    parser.add_argument("--redis", metavar="URL", help="also time the guard against this Redis")
    options = parser.parse_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import override_settings
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from django_apiauth.core import lifecycle
    from django_apiauth.models import ApiKey
    from django_apiauth.schemes.api_key import ApiKeyAuthentication

    call_command("migrate", verbosity=0)
    owner = get_user_model().objects.create_user("bench")
    _plain, plain_key = lifecycle.issue(ApiKey, owner=owner, name="plain")
    _limited, limited_key = lifecycle.issue(ApiKey, owner=owner, name="limited",
                                            rate_limit="999999999/h")
    factory = APIRequestFactory()
    auth = ApiKeyAuthentication()
    off = {"APIAUTH_LOCKOUT_ENABLED": False, "APIAUTH_ALERT_NEW_IP": False}
    variants: dict[str, tuple[dict[str, object], str]] = {
        "guard off": (off, plain_key),
        "lockout + new-address check (default)": ({}, plain_key),
        "default + rate limit": ({}, limited_key),
    }
    if options.redis:
        redis = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
                 "limits": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                            "LOCATION": options.redis}}
        on_redis = {"CACHES": redis, "APIAUTH_RATE_LIMIT_CACHE": "limits"}
        variants["Redis: default"] = (on_redis, plain_key)
        variants["Redis: default + rate limit"] = (on_redis, limited_key)
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _round in range(options.rounds):
        for name, (overrides, key) in variants.items():
            with override_settings(APIAUTH_AUDIT_SUCCESS=False, **overrides):
                def one(key: str = key) -> None:
                    auth.authenticate(Request(factory.get(
                        "/api/whoami/", HTTP_AUTHORIZATION=f"Api-Key {key}")))

                one()
                best = min(timeit.repeat(one, number=options.batch, repeat=3,
                                         timer=time.process_time))
                results[name].append(best / options.batch * 1e6)
    base = sorted(results["guard off"])
    print(f"{'variant':40} {'min µs':>8} {'median µs':>10} {'+median µs':>11}")
    for name, values in results.items():
        values.sort()
        median = values[len(values) // 2]
        print(f"{name:40} {values[0]:8.1f} {median:10.1f} {median - base[len(base) // 2]:11.1f}")


if __name__ == "__main__":
    main()
