"""Send every query of the benchmarked code to one database alias, switched at run time.

The lookup benchmark keeps one database per table size (1, 10 000, 1 000 000
keys) so that the sizes can be measured interleaved, round after round, like
the request variants: slow drift of the machine then hits every size alike.
"""

from __future__ import annotations

from typing import Any


class SwitchRouter:
    alias: str | None = None  # None: Django's default routing ("default")

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return SwitchRouter.alias

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return SwitchRouter.alias


class using:
    def __init__(self, alias: str | None) -> None:
        self.alias = alias

    def __enter__(self) -> None:
        self.previous, SwitchRouter.alias = SwitchRouter.alias, self.alias

    def __exit__(self, *exc: object) -> None:
        SwitchRouter.alias = self.previous
