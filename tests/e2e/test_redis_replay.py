"""The replay store on a real Redis (Django's RedisCache), shared by two clients.

A throwaway redis-server on a free loopback port, started once for the module.
Proves: a signed request accepted through one cache client is refused as a
replay through another (two workers sharing Redis), and Redis going away
turns signed requests into 503 (fail closed), never an unchecked accept.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.test import override_settings

from django_apiauth.core import lifecycle
from django_apiauth.models import AuditEvent, HmacSecret
from django_apiauth.sign import sign_request

REDIS = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
)
MISSING = "redis-server is not installed: run `make system-deps` (Debian's redis-server)."

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db,
    # In CI a missing redis-server is a failure, not a skip: make test installs it.
    pytest.mark.skipif(REDIS is None and not os.environ.get("CI"), reason=MISSING),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if REDIS is None:
        pytest.fail(MISSING)
    port, workdir = free_port(), tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(  # noqa: S603 (fixed arguments)
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.02)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(5)


def redis_caches(url: str) -> dict[str, Any]:
    backend = "django.core.cache.backends.redis.RedisCache"
    return {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "replay-a": {"BACKEND": backend, "LOCATION": url},
            "replay-b": {"BACKEND": backend, "LOCATION": url}}


def signed_get(client: Any, credential: HmacSecret, secret: str, nonce: str | None) -> Any:
    headers = sign_request("GET", "http://testserver/api/whoami/", {}, None, credential.key_id,
                           secret.encode(), nonce=nonce)
    meta = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
    return client.get("/api/whoami/", **meta), meta


@pytest.mark.parametrize("nonce", ["n-" + str(time.time_ns()), None], ids=["nonce", "no-nonce"])
def test_replay_refused_across_workers_sharing_redis(client, user, redis_url, nonce):
    credential, secret = lifecycle.issue(HmacSecret, owner=user, name="redis")
    with override_settings(CACHES=redis_caches(redis_url), APIAUTH_REPLAY_CACHE="replay-a"):
        first, meta = signed_get(client, credential, secret, nonce)
        assert first.status_code == 200, first.content
    # "Another worker": another cache client (own connection pool) on the same Redis.
    with override_settings(CACHES=redis_caches(redis_url), APIAUTH_REPLAY_CACHE="replay-b"):
        caches["replay-b"].get("warm-up")
        second = client.get("/api/whoami/", **meta)
    assert second.status_code == 401
    assert AuditEvent.objects.filter(event="authenticate").order_by("-id").first().reason == "replayed"


def test_redis_down_is_503(client, user):
    credential, secret = lifecycle.issue(HmacSecret, owner=user, name="redis down")
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with override_settings(CACHES=redis_caches(dead), APIAUTH_REPLAY_CACHE="replay-a"):
        response, _meta = signed_get(client, credential, secret, "n-down")
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
