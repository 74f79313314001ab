"""Payload entropy: the Chao-Shen corrected estimate vs the plug-in one."""

from __future__ import annotations

import os
import random
import statistics
from collections import Counter
from pathlib import Path

import pytest

from sensor.telemetry.entropy import ByteHistogram, corrected_bits, payload_entropy, shannon_bits

GPL = Path("/usr/share/common-licenses/GPL-3")

PARAGRAPH = (
    "Sluice watches the bytes that leave every container on a host and writes one "
    "line of JSON for each flow it sees. It counts what each process sends, to which "
    "address and port, and estimates how random the payload looks, because compressed "
    "or encrypted data leaving a database container at three in the morning is worth a "
    "second look. The sensor never stores payloads; it keeps a small histogram of byte "
    "values per flow and forgets it when the window closes. Operators read the summaries "
    "in their log pipeline, and the command line tool shows the busiest containers live. "
)


def english_text() -> bytes:
    if GPL.is_file():
        return GPL.read_bytes()
    return (PARAGRAPH * 20).encode()


def chunks(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data) - n + 1, n)]


def test_random_64_bytes_score_above_7_on_average() -> None:
    vals = [payload_entropy(os.urandom(64)) for _ in range(300)]
    assert statistics.mean(vals) > 7.0
    assert all(0.0 <= v <= 8.0 for v in vals)


def test_random_4096_bytes_score_above_7_9() -> None:
    for _ in range(20):
        assert payload_entropy(os.urandom(4096)) > 7.9


def test_plain_shannon_is_biased_low_on_64_random_bytes() -> None:
    plain = [shannon_bits(Counter(d).values(), 64) for d in (os.urandom(64) for _ in range(300))]
    mean = statistics.mean(plain)
    assert 5.5 < mean < 6.0  # about 5.8, far from 8
    assert max(plain) <= 6.0  # log2(64): 64 draws cannot exceed it
    # the correction removes most of the bias
    corrected = statistics.mean(payload_entropy(os.urandom(64)) for _ in range(300))
    assert corrected - mean > 1.5


@pytest.mark.parametrize("size", [64, 512, 4096])
def test_english_text_stays_below_5_5(size: int) -> None:
    parts = chunks(english_text(), size)
    assert parts, "not enough text"
    vals = [payload_entropy(p) for p in parts]
    assert max(vals) < 5.5
    assert statistics.mean(vals) > 3.0  # text is not constant either


def test_written_paragraph_below_5_5() -> None:
    data = PARAGRAPH.encode()
    for size in (64, 512):
        for p in chunks(data, size):
            assert payload_entropy(p) < 5.5


def test_constant_data_is_zero() -> None:
    assert payload_entropy(b"\0" * 4096) == 0.0
    assert payload_entropy(b"A" * 64) == 0.0
    h = ByteHistogram()
    h.add(b"z" * 100)
    assert h.entropy() == 0.0


def test_two_equiprobable_values_is_about_one_bit() -> None:
    data = bytes([0, 255]) * 2048
    assert payload_entropy(data) == pytest.approx(1.0, abs=0.01)
    assert shannon_bits(Counter(data).values(), len(data)) == pytest.approx(1.0)


def test_bounds_and_degenerate_inputs() -> None:
    assert corrected_bits([], 0) == 0.0
    assert corrected_bits([1], 1) == 0.0
    assert shannon_bits([], 0) == 0.0
    # every byte distinct: coverage would be 0; the estimate stays finite and capped
    v = payload_entropy(bytes(range(256)))
    assert 7.5 <= v <= 8.0
    v = payload_entropy(bytes(range(64)))
    assert 0.0 < v <= 8.0


def test_histogram_needs_16_bytes() -> None:
    h = ByteHistogram()
    assert h.entropy() is None
    h.add(os.urandom(15))
    assert h.total == 15
    assert h.entropy() is None
    h.add(b"")
    assert h.entropy() is None
    h.add(b"x")
    assert h.total == 16
    assert h.entropy() is not None


def test_histogram_accumulates_and_merges() -> None:
    rng = random.Random(7)
    a, b = rng.randbytes(300), rng.randbytes(500)
    h1, h2 = ByteHistogram(), ByteHistogram()
    h1.add(a)
    h2.add(b)
    h1.merge(h2)
    assert h1.total == 800
    assert h1.counts == Counter(a + b)
    assert h1.entropy() == round(payload_entropy(a + b), 3)


def test_histogram_entropy_of_text_vs_random() -> None:
    text, rnd = ByteHistogram(), ByteHistogram()
    for p in chunks(english_text(), 64)[:16]:
        text.add(p)
    for _ in range(16):
        rnd.add(os.urandom(64))
    text_bits, rnd_bits = text.entropy(), rnd.entropy()
    assert text_bits is not None and text_bits < 5.5
    assert rnd_bits is not None and rnd_bits > 7.5
