"""Metadata filters of a gallery search or deletion: cameras and a time window.

A `SearchFilter` keeps an item when its camera is one of `camids` and `after ≤ timestamp < before` (each
condition only when given). Timestamps are seconds since the Unix epoch (UTC); an item without one (NaN) never
passes a time condition. Each backend applies the same predicate: a boolean mask for the in-memory index, a
boolean expression for Milvus (`milvus_expression`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import torch
from torch import Tensor

# A plain number of seconds since the epoch (ASCII digits: `str.isdigit` accepts other scripts' digits).
EPOCH_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")


@dataclass(frozen=True)
class SearchFilter:
    """Which gallery items a search (or deletion) may touch.

    Attributes:
        camids: 0-based camera ids kept (the `camids` of the index; camera number − 1), or None for all.
        after: keep items with timestamp ≥ this (seconds since the epoch), or None.
        before: keep items with timestamp < this (seconds since the epoch), or None.

    Raises:
        ValueError: an empty camera list, a non-finite time, or `after` not before `before`.
    """

    camids: tuple[int, ...] | None = None
    after: float | None = None
    before: float | None = None

    def __post_init__(self) -> None:
        if self.camids is not None:
            if not self.camids:
                raise ValueError("the camera list is empty; give at least one camera or no camera filter")
            object.__setattr__(self, "camids", tuple(sorted({int(camid) for camid in self.camids})))
        for name in ("after", "before"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite time in seconds, got {value!r}")
        if self.after is not None and self.before is not None and self.after >= self.before:
            raise ValueError(f"the time window is empty: after {format_time(self.after)} is not before "
                             f"{format_time(self.before)}")

    @property
    def is_empty(self) -> bool:
        """True when the filter keeps every item (no condition given)."""
        return self.camids is None and self.after is None and self.before is None

    def mask(self, camids: Tensor, timestamps: Tensor) -> Tensor:
        """Boolean `[N]` mask of the items kept, from their `camids` `[N]` int64 and `timestamps` `[N]` float64."""
        keep = torch.ones(len(camids), dtype=torch.bool)
        if self.camids is not None:
            keep &= torch.isin(camids, torch.tensor(self.camids, dtype=camids.dtype))
        if self.after is not None:
            keep &= timestamps >= self.after  # NaN compares False: an unknown time never passes
        if self.before is not None:
            keep &= timestamps < self.before
        return keep

    def milvus_expression(self) -> str:
        """The same predicate as a Milvus boolean expression over the fields `camid` and `timestamp` ("" for none).
        Unknown timestamps are stored as NaN there too, and fail both comparisons."""
        terms = []
        if self.camids is not None:
            terms.append(f"camid in [{', '.join(str(camid) for camid in self.camids)}]")
        if self.after is not None:
            terms.append(f"timestamp >= {self.after!r}")
        if self.before is not None:
            terms.append(f"timestamp < {self.before!r}")
        return " and ".join(terms)


def parse_time(text: str) -> float:
    """Seconds since the epoch of `text`: a plain number of seconds, or an ISO 8601 date or date-time
    (`2026-12-06`, `2026-12-06T14:00`, `2026-12-06 14:00:00+01:00`); without a UTC offset it is UTC.

    Raises:
        ValueError: anything else, with an example of what is accepted.
    """
    text = text.strip()
    if EPOCH_SECONDS.fullmatch(text):
        return float(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not a time: give an ISO 8601 date-time such as 2026-12-06T14:00 "
                         "(UTC unless it has an offset such as +01:00) or seconds since the epoch") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def format_time(seconds: float) -> str:
    """ISO 8601 UTC text of seconds since the epoch ("unknown" for NaN)."""
    if not math.isfinite(seconds):
        return "unknown"
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
