"""``manage.py reencrypt_secrets``: re-encrypt stored secrets under the current key.

Run it after putting a new key first in ``APIAUTH_ENCRYPTION_KEYS`` (or after
rotating ``SECRET_KEY`` with the old one in ``SECRET_KEY_FALLBACKS``) and
before removing the old key (DESIGN §3). Every credential model that declares
``encrypted_fields`` is covered, and so are the certificate authorities'
private keys; every stored value is decrypted (so a value
no configured key can read is found now, not at a client's next request) and
those under an older key are written back under the current one.

Rows are read in chunks and written in batches, one transaction per batch;
each write is a compare-and-swap ``UPDATE`` of that one field, so a row changed
meanwhile is left alone and nothing else in it is touched. The command is
idempotent: run it again after an interruption. Secrets are never printed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import router, transaction
from django.db.models import Model

from ...core import encryption, registry
from ...core.models import AbstractCredential
from ...models import CertificateAuthority
from ._base import ApiAuthCommand

BAR_WIDTH = 30


@dataclass
class Failure:
    model: str
    id: str
    pk: Any
    field: str
    error: str

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "id": self.id, "pk": self.pk, "field": self.field,
                "error": self.error}


@dataclass
class Counts:
    total: int = 0
    reencrypted: int = 0
    current: int = 0
    changed_meanwhile: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.reencrypted + self.current + self.changed_meanwhile + len(self.failures)


def encrypted_models() -> list[type[AbstractCredential]]:
    """Credential models with ``encrypted_fields``, in a stable order."""
    return [
        model for _kind, model in sorted(registry.credential_models().items())
        if getattr(model, "encrypted_fields", ())
    ]


def other_encrypted_models() -> list[type[Model]]:
    """Encrypted models that are not credentials: the certificate authorities' keys,
    the SAML SP key and the OpenID Connect client secrets."""
    from ...models import OidcProvider, SamlServiceProviderKey

    return [CertificateAuthority, SamlServiceProviderKey, OidcProvider]


def _label(model: type[Model]) -> str:
    return model._meta.label_lower


def _public_id(obj: Any) -> str:
    """What identifies a row to operators: a credential's public id, a CA's slug."""
    if isinstance(obj, AbstractCredential):
        return obj.public_id
    return str(getattr(obj, "slug", obj.pk))


class Command(ApiAuthCommand):
    help = (
        "Re-encrypt every stored encrypted secret (HMAC signing keys, certificate authority "
        "keys) under the current "
        "encryption key, the first of APIAUTH_ENCRYPTION_KEYS (or SECRET_KEY). Run it after "
        "adding a new key and before removing the old one. Secrets are never printed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true",
                            help="Decrypt and count, but write nothing.")
        parser.add_argument("--batch-size", type=int, default=500, metavar="N",
                            help="Rows per chunk and per transaction (default: 500).")
        super().add_arguments(parser)

    def run(self, *args: Any, **options: Any) -> None:
        batch_size: int = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1, e.g. --batch-size 500.")
        dry_run: bool = options["dry_run"]
        counts = Counts()
        per_model: dict[str, dict[str, int]] = {}
        credential_models = encrypted_models()
        work = []
        for model in [*credential_models, *other_encrypted_models()]:
            for field_name in model.encrypted_fields:  # type: ignore[attr-defined]
                queryset = self._queryset(model, field_name)
                count = queryset.count()
                # Credential models are always listed under "models"; the others
                # (certificate authorities) only when they hold encrypted values.
                if count or model in credential_models:
                    work.append((model, field_name, queryset, count))
        counts.total = sum(count for _model, _field, _queryset, count in work)
        current_key_id = encryption.current_key_id()
        for model, field_name, queryset, _count in work:
            stats = per_model.setdefault(_label(model), {"total": 0, "reencrypted": 0, "current": 0,
                                                         "failed": 0})
            for batch in _batches(queryset, batch_size):
                before = (counts.reencrypted, counts.current, len(counts.failures))
                self._process(model, field_name, batch, counts, dry_run)
                stats["total"] += len(batch)
                stats["reencrypted"] += counts.reencrypted - before[0]
                stats["current"] += counts.current - before[1]
                stats["failed"] += len(counts.failures) - before[2]
                self._progress(counts)
        self._progress_end(counts)

        if options["json"]:
            self.write_json({
                "dry_run": dry_run,
                "current_key_id": current_key_id,
                "total": counts.total,
                "reencrypted": counts.reencrypted,
                "already_current": counts.current,
                "changed_meanwhile": counts.changed_meanwhile,
                "failed": len(counts.failures),
                "models": per_model,
                "failures": [failure.as_dict() for failure in counts.failures],
            })
        else:
            verb = "Would re-encrypt" if dry_run else "Re-encrypted"
            summary = (f"{verb} {counts.reencrypted} of {counts.total} secrets; "
                       f"{counts.current} already current.")
            extra = []
            if counts.changed_meanwhile:
                extra.append(f"{counts.changed_meanwhile} changed by someone else meanwhile (left alone)")
            if counts.failures:
                extra.append(f"{len(counts.failures)} could not be decrypted")
            if extra:
                joined = "; ".join(extra)
                summary += f" {joined[0].upper()}{joined[1:]}."
            if dry_run:
                summary += " Dry run: nothing was written."
            style = self.style.WARNING if counts.failures else self.style.SUCCESS
            self.stdout.write(style(summary))
        if counts.failures:
            raise CommandError(
                f"{len(counts.failures)} stored secret(s) could not be decrypted (listed above; the "
                "others were processed). Put the encryption key that wrote them back into "
                "APIAUTH_ENCRYPTION_KEYS (or SECRET_KEY_FALLBACKS) and run reencrypt_secrets again; "
                "if that key is lost, revoke those credentials and issue new ones."
            )

    # -- work ------------------------------------------------------------------

    @staticmethod
    def _queryset(model: type[Model], field_name: str) -> Any:
        # Read where we write: a lagging replica would only make every swap miss.
        using = router.db_for_write(model)
        return (
            model._default_manager.using(using)
            .exclude(**{field_name: ""})
            .exclude(**{f"{field_name}__isnull": True})
            .order_by("pk")
        )

    def _process(self, model: type[Model], field_name: str,
                 batch: list[Any], counts: Counts, dry_run: bool) -> None:
        using = router.db_for_write(model)
        with transaction.atomic(using=using):
            for obj in batch:
                token: str = getattr(obj, field_name)
                context = obj.encryption_context(field_name)  # type: ignore[attr-defined]
                try:
                    # Decrypt even current values: an unreadable one is found now.
                    plaintext = encryption.decrypt(token, context)
                except encryption.DecryptionError as exc:
                    self._report(model, obj, field_name, str(exc), counts)
                    continue
                if not encryption.needs_reencryption(token):
                    counts.current += 1
                    continue
                if dry_run:
                    counts.reencrypted += 1
                    continue
                new_token = encryption.encrypt(plaintext, context)
                updated = (
                    model._default_manager.using(using)
                    .filter(pk=obj.pk, **{field_name: token})
                    .update(**{field_name: new_token})
                )
                if updated:
                    counts.reencrypted += 1
                else:
                    counts.changed_meanwhile += 1

    def _report(self, model: type[Model], obj: Any, field_name: str,
                error: str, counts: Counts) -> None:
        failure = Failure(model=_label(model), id=_public_id(obj), pk=obj.pk, field=field_name,
                          error=error)
        counts.failures.append(failure)
        if self._bar_in_place():
            self.stderr.write("", style_func=_plain)  # leave the progress line intact
        self.stderr.write(
            f"Cannot decrypt {failure.model} {failure.id} (pk {failure.pk}), field "
            f"{failure.field}: {failure.error}"
        )

    # -- progress on stderr ----------------------------------------------------

    def _bar_in_place(self) -> bool:
        return bool(self.stderr.isatty())

    def _progress(self, counts: Counts) -> None:
        total = counts.total
        done = min(counts.done, total) if total else counts.done
        filled = BAR_WIDTH * done // total if total else BAR_WIDTH
        line = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total}"
        if self._bar_in_place():
            self.stderr.write("\r" + line, ending="", style_func=_plain)
            self.stderr.flush()
        else:
            self.stderr.write(line, style_func=_plain)

    def _progress_end(self, counts: Counts) -> None:
        if self._bar_in_place() and counts.done:
            self.stderr.write("", style_func=_plain)


def _plain(text: str) -> str:
    return text


def _batches(queryset: Any, size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for obj in queryset.iterator(chunk_size=size):
        batch.append(obj)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
