"""The latency package's error classes, in a leaf module every other latency module may import."""
from __future__ import annotations

from hwnas.errors import HwnasError


class LatencyTableError(HwnasError):
    """A latency table that cannot be used as asked; the message says why and what to run."""


class UnknownTargetError(LatencyTableError, ValueError):
    """A target name no backend implements; the message lists the known ones."""


class TimingUnavailable(LatencyTableError):
    """This backend can convert here but not time (e.g. Core ML on Linux)."""
