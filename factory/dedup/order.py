"""Listing order for dedup decisions made by parallel tasks.

"The first occurrence in listing order is kept" needs every earlier input decided (and,
if kept, stored) before an input is checked. Batches run in parallel, so each shard keeps
a watermark: the smallest `input_index` of this run not yet committed. A batch whose
first index is past the watermark waits; committing a batch moves the watermark over it.
The run's indexes have gaps on a resumed run (inputs already written are not listed), so
the watermark steps over them using the listing's index ranges.
"""

from __future__ import annotations

import bisect

from factory.io.listing_spill import Ranges


class ListingOrder:
    def __init__(self, ranges: Ranges):
        self._starts = [start for start, _ in ranges]
        self._ends = [end for _, end in ranges]
        self.next: int | None = self._starts[0] if ranges else None  # None: all committed
        self._early: set[int] = set()  # committed indexes past the watermark

    def ready(self, first: int) -> bool:
        """Whether every input before `first` has been committed."""
        return self.next is None or first <= self.next

    def commit(self, indexes: list[int]) -> None:
        self._early.update(indexes)
        while self.next is not None and self.next in self._early:
            self._early.discard(self.next)
            self.next = self._after(self.next)
        if self.next is not None:  # a retried batch's indexes may be behind the watermark
            self._early = {index for index in self._early if index > self.next}

    def _after(self, index: int) -> int | None:
        run = bisect.bisect_right(self._starts, index) - 1
        if index + 1 < self._ends[run]:
            return index + 1
        return self._starts[run + 1] if run + 1 < len(self._starts) else None
