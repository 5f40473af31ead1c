"""The value types of the `rollout:` section (models.RolloutSpec): how a stage of many app hosts is released in batches (deploykit release --batch).

Batch sizes follow Ansible's `serial`: each entry is a number of hosts or a
percentage of the stage's rolled hosts (rounded up, at least one host); the
last entry repeats until every host is in a batch. `[1, 25%, 100%]` on eight
hosts is batches of 1, 2 and the remaining 5: the first batch is the canary.
"""
from __future__ import annotations

import math
import re
from typing import Any

from .fields import KEY, _typed, of_kind, problem, show

PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
WORKER_POLICIES = ("around_migrate", "with_batch")


def parse_batch(value: Any) -> int | str:
    """One batch size: a whole number ≥ 1, or 'N%' with 0 < N ≤ 100 (kept as written, e.g. '25%')."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise problem(f"expected a number of hosts or a percentage, got {show(value)}",
                      f"write '{KEY}' entries as 1 or '25%'")
    if isinstance(value, int):
        if value < 1:
            raise problem(f"a batch holds at least one host, got {value}", "write 1 or more, or a percentage")
        return value
    m = PERCENT.match(value)
    if not m or not 0 < float(m.group(1)) <= 100:
        raise problem(f"{show(value)} is not a number of hosts or a percentage from 1% to 100%",
                      "write entries such as 1, 2 or '25%'")
    return f"{float(m.group(1)):g}%"


def _batches(value: Any) -> list:
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        value = [value]
    of_kind(value, list)
    if not value:
        raise problem("empty", "give at least one batch size, e.g. [1, 25%, 100%]")
    return [parse_batch(v) for v in value]


def _duration(value: Any) -> float:
    """Seconds: a number, or text such as '5s', '2m', '500ms'."""
    if isinstance(value, str):
        m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$", value)
        if not m:
            raise problem(f"{show(value)} is not a duration", f"write '{KEY}' as 5, '5s', '500ms' or '2m'")
        number = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    else:
        of_kind(value, int, float)
        number = float(value)
    if not math.isfinite(number) or number < 0:
        raise problem(f"must be 0 or more seconds, got {show(value)}", f"give '{KEY}' a duration such as '5s'")
    return number


def _rate(value: Any) -> float:
    """A fraction of requests: 0.01 or '1%'."""
    if isinstance(value, str):
        m = PERCENT.match(value)
        if not m:
            raise problem(f"{show(value)} is not a percentage", f"write '{KEY}' as '1%' or 0.01")
        number = float(m.group(1)) / 100
    else:
        of_kind(value, int, float)
        number = float(value)
    if not 0 <= number <= 1:
        raise problem(f"must be from 0% to 100%, got {show(value)}", f"write '{KEY}' as '1%' or 0.01")
    return number


BatchSizes = _typed(list, "list of host counts or percentages", _batches)
Duration = _typed(float, "duration (5, '5s', '500ms', '2m')", _duration)
Rate = _typed(float, "percentage ('1%') or fraction (0.01)", _rate)


def parse_batch_option(text: str | None) -> list | None:
    """--batch 1,25%,100%: the batch sizes, checked as rollout.batches is (None: not given)."""
    from pydantic_core import PydanticCustomError

    from ..errors import ConfigError

    if text is None:
        return None
    try:
        return [parse_batch(int(part) if part.strip().isdigit() else part.strip()) for part in str(text).split(",")]
    except PydanticCustomError as exc:
        raise ConfigError(f"--batch {text}: {exc.message()}", hint="write --batch 1,25%,100%") from None
