"""The peak-RSS meter the memory probes use."""

from __future__ import annotations

from holitom.bench.memory import MB, PeakRSS, current_rss, release_free_heap


def test_peak_rss_sees_a_short_lived_allocation():
    release_free_heap()
    start = current_rss()
    with PeakRSS() as peak:
        block = b"\x01" * (256 * MB)  # written, so every page is resident
        del block
    assert peak.method in ("vmhwm", "sampled")
    assert peak.peak - start >= 200 * MB
    release_free_heap()
    assert current_rss() - start < 100 * MB  # the block is gone again; the peak remembered it
