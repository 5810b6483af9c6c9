"""Row keys of an arch: the latency-table key of each of its blocks, in execution order.

One implementation of the block order exists, in `search_spaces` (`Arch.block_keys`, computed
once per Arch from interned `BlockSpec`s; about 50-80 µs for a new arch, validation included, and
under 1 µs again). This module only adapts it for tables.
"""
from __future__ import annotations

from search_spaces import Arch


def block_keys(arch: Arch, num_classes: int = 1000) -> tuple[str, ...]:
    return arch.block_keys(num_classes)
