"""Payload entropy in bits per byte, corrected for sample length.

The plug-in (maximum likelihood) Shannon estimate is biased low on short
samples: 64 bytes of perfectly random data score about 5.8 bits, not 8,
because 64 draws cannot fill 256 bins. Sluice uses the coverage-adjusted
estimator of Chao and Shen (2003): the sample coverage C = 1 - f1/n (f1 =
byte values seen once) shrinks the observed frequencies to account for the
unseen values, and a Horvitz-Thompson weight corrects for values missing
from the sample. Measured on 200 samples each: random data scores about 8
(minimum 7.0 at 64 bytes, 7.45 at 128), English text about 4.4 (maximum 5.0
at 64 bytes), where a simple rescaling puts text at 5.6 to 6.2.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

MAX_BITS = 8.0


def shannon_bits(counts: Iterable[int], total: int) -> float:
    """Plug-in entropy (bits per symbol) of a histogram with `total` symbols."""
    if total <= 0:
        return 0.0
    h = 0.0
    for c in counts:
        if c:
            p = c / total
            h -= p * math.log2(p)
    return h


def corrected_bits(counts: Iterable[int], total: int) -> float:
    """Chao-Shen coverage-adjusted entropy (bits per byte), within [0, 8]."""
    n = total
    if n <= 1:
        return 0.0
    cs = [c for c in counts if c]
    f1 = sum(1 for c in cs if c == 1)
    if f1 == n:  # every byte distinct: coverage would be 0
        f1 = n - 1
    coverage = 1.0 - f1 / n
    h = 0.0
    for c in cs:
        pa = coverage * c / n
        denom = 1.0 - (1.0 - pa) ** n
        if denom > 0:
            h -= pa * math.log2(pa) / denom
    return min(MAX_BITS, max(0.0, h))


class ByteHistogram:
    """Byte-value counts accumulated from payload samples."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.total = 0

    def add(self, data: bytes) -> None:
        if data:
            self.counts.update(data)
            self.total += len(data)

    def merge(self, other: ByteHistogram) -> None:
        self.counts.update(other.counts)
        self.total += other.total

    def entropy(self) -> float | None:
        """Corrected bits per byte, or None with fewer than 16 sampled bytes."""
        if self.total < 16:
            return None
        return round(corrected_bits(self.counts.values(), self.total), 3)


def payload_entropy(data: bytes) -> float:
    """Corrected entropy of one buffer (bits per byte)."""
    return corrected_bits(Counter(data).values(), len(data))
