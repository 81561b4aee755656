"""When a pipeline runs: the ``schedule:`` field (standard 5-field cron plus a time zone).

A leaf module (croniter, the standard library and :mod:`icepipe.errors` only):
:mod:`icepipe.spec` validates the field with :func:`parse_schedule`; :mod:`icepipe.ops.schedule`
computes fire times with :meth:`Schedule.next_after` and translates schedules for cron, systemd
and Kubernetes.

Only the syntax every one of those understands is accepted: five fields (minute, hour, day of
month, month, day of week) made of numbers, three-letter names, ``*``, ``a-b``, ``/step`` and
``,`` lists, or the macros ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from icepipe.errors import ConfigError

__all__ = ["MACROS", "Schedule", "parse_schedule"]

#: Macros and the 5-field expressions they stand for.
MACROS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_ATOM = r"(?:\d+|[a-z]{3})"
_TOKEN = re.compile(rf"^(?:\*|{_ATOM}(?:-{_ATOM})?)(?:/\d+)?$")
_FIELDS = ("minute", "hour", "day of month", "month", "day of week")


@dataclass(frozen=True)
class Schedule:
    """A validated schedule: a 5-field cron expression evaluated in ``timezone``.

    Attributes
    ----------
    cron
        The expression as written (macros kept, whitespace normalised).
    timezone
        An IANA zone name (``Europe/Paris``); ``UTC`` unless the pipeline says otherwise.
    """

    cron: str
    timezone: str = "UTC"

    @property
    def expression(self) -> str:
        """The 5-field expression (macros expanded)."""
        return MACROS.get(self.cron, self.cron)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_after(self, when: datetime) -> datetime:
        """The first fire time strictly after ``when`` (an aware datetime), in ``timezone``."""
        it = croniter(self.expression, when.astimezone(self.zone))
        return cast(datetime, it.get_next(datetime))

    def fields(self) -> list[list[int] | None]:
        """Each field's values (``None`` for ``*``), days of week as 0 (Sunday) to 6."""
        expanded, _ = croniter.expand(self.expression)
        out: list[list[int] | None] = []
        for values in expanded:
            if values == ["*"]:
                out.append(None)
            else:
                out.append(sorted({int(v) % 7 for v in values} if len(out) == 4 else set(values)))
        return out


def parse_schedule(raw: object, field: str = "schedule") -> Schedule | None:
    """Validate a pipeline's ``schedule`` field.

    Two spellings: a string (``"0 2 * * *"``, evaluated in UTC) or a mapping
    ``{cron: "0 2 * * *", timezone: Europe/Paris}``.

    Raises
    ------
    ConfigError
        Not 5-field cron syntax, a date that never occurs (``0 0 31 2 *``), or an unknown
        time zone; the message names the field.
    """
    if raw is None:
        return None
    timezone = "UTC"
    cron_field = field
    if isinstance(raw, Mapping):
        m = cast(Mapping[str, Any], raw)
        unknown = sorted(str(k) for k in m if k not in ("cron", "timezone"))
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: cron, timezone",
                field=f"{field}.{unknown[0]}",
            )
        cron_field = f"{field}.cron"
        raw_cron = m.get("cron")
        tz = m.get("timezone", "UTC")
        if not isinstance(tz, str) or not tz.strip():
            raise ConfigError(
                f"expected an IANA time zone name such as Europe/Paris or UTC; got "
                f"{type(tz).__name__} {tz!r}",
                field=f"{field}.timezone",
            )
        timezone = tz.strip()
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"unknown time zone {timezone!r}; use an IANA name such as Europe/Paris, "
                "America/New_York or UTC",
                field=f"{field}.timezone",
            ) from None
    else:
        raw_cron = raw
    if not isinstance(raw_cron, str) or not raw_cron.strip():
        raise ConfigError(
            "expected a cron expression such as '0 2 * * *' (minute hour day-of-month month "
            f"day-of-week); got {type(raw_cron).__name__} {raw_cron!r}",
            field=cron_field,
        )
    cron = " ".join(raw_cron.lower().split())
    _check_cron(cron, cron_field)
    schedule = Schedule(cron=cron, timezone=timezone)
    try:
        schedule.next_after(datetime.now(schedule.zone))
    except (ValueError, KeyError) as exc:  # CroniterBadDateError is a ValueError
        raise ConfigError(
            f"{raw_cron!r} never fires (no such date); check the day-of-month and month fields",
            field=cron_field,
        ) from exc
    return schedule


def _check_cron(cron: str, field: str) -> None:
    if cron.startswith("@"):
        if cron not in MACROS:
            raise ConfigError(
                f"unknown macro {cron!r}; use one of {', '.join(MACROS)} or 5 fields",
                field=field,
            )
        return
    parts = cron.split(" ")
    if len(parts) != 5:
        raise ConfigError(
            f"expected 5 fields (minute hour day-of-month month day-of-week); got {len(parts)} "
            f"in {cron!r}",
            field=field,
        )
    for name, part in zip(_FIELDS, parts, strict=True):
        for token in part.split(","):
            if not _TOKEN.match(token):
                raise ConfigError(
                    f"{name} field {part!r}: expected numbers, 3-letter names, '*', 'a-b', "
                    "'/step' and ',' lists (L, W, # and ? are not portable to systemd and "
                    "Kubernetes)",
                    field=field,
                )
    if not croniter.is_valid(cron):
        raise ConfigError(
            f"{cron!r} is not a valid cron expression (a value out of range?): minute 0-59, "
            "hour 0-23, day of month 1-31, month 1-12 or jan-dec, day of week 0-7 or sun-sat",
            field=field,
        )
