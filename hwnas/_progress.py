"""Progress of a long loop on stderr: a tqdm bar, or -- where tqdm is not installed (the GPU
machine may lack it) -- a line every 10 items."""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def progress_bar(iterable: Iterable[T], total: int, desc: str, enabled: bool = True) -> Iterable[T]:
    """`iterable`, reporting progress as it is consumed (nothing when `enabled` is false)."""
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)
    except ImportError:
        return _lines(iterable, total, desc)


def _lines(iterable: Iterable[T], total: int, desc: str) -> Iterator[T]:
    for i, x in enumerate(iterable):
        if i % 10 == 0:
            print(f"{desc}: {i}/{total}", file=sys.stderr, flush=True)
        yield x


__all__ = ["progress_bar"]
