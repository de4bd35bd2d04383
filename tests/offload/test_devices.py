import pytest

from base.errors import SpecError
from offload.devices import Channel, Slowdown, Store, finish_time


def test_finish_time_without_windows_is_start_plus_work():
    assert finish_time(2.0, 3.0, []) == 5.0


def test_finish_time_integrates_a_slow_window():
    # 1 s at full speed, then 10% speed over [1, 3): 0.2 s of work absorbed, the remaining 0.8 s after the window
    assert finish_time(0.0, 2.0, [(1.0, 3.0, 0.1)]) == pytest.approx(3.8, abs=1e-12)
    # work that ends inside the window
    assert finish_time(0.0, 1.1, [(1.0, 3.0, 0.1)]) == pytest.approx(2.0, abs=1e-12)
    # starting inside the window
    assert finish_time(2.0, 0.1, [(1.0, 3.0, 0.1)]) == pytest.approx(3.0, abs=1e-12)
    # a window entirely before the start changes nothing
    assert finish_time(5.0, 1.0, [(1.0, 3.0, 0.1)]) == 6.0


def test_channel_is_fifo_in_booking_order_and_adds_latency_without_occupying():
    ch = Channel("link", members=1, latency_s=0.5)
    assert ch.book(0.0, 1.0) == 1.5  # available after work + latency
    assert ch.book(0.0, 1.0) == 2.5  # queued behind the first piece: starts at 1.0, not 1.5
    assert ch.book(10.0, 1.0) == 11.5  # idle gap: starts when posted
    assert ch.busy_s == [3.0]
    assert ch.calendar == [[(0.0, 2.0), (10.0, 11.0)]]


def test_a_piece_fills_an_earlier_gap_only_if_it_fits_whole():
    ch = Channel("link", members=1, latency_s=0.0)
    ch.book(5.0, 1.0)  # booked ahead: [5, 6)
    assert ch.book(0.0, 2.0) == 2.0  # fits in [0, 5)
    assert ch.book(1.0, 4.0) == 10.0  # [2, 5) is too short: after [5, 6)
    ch.forget_before(6.0)
    assert ch.calendar == [[(5.0, 10.0)]]  # [5, 6) and [6, 10) merged; it ends after 6, so it stays


def test_striped_channel_waits_for_its_slowest_member():
    ch = Channel("drives", members=2, latency_s=0.0)
    ch.add_slowdown(Slowdown("drives", start_s=0.0, end_s=100.0, factor=0.1, member=1))
    assert ch.book(0.0, 1.0) == pytest.approx(10.0)
    assert ch.busy_s == pytest.approx([1.0, 10.0])


def test_overlapping_slowdowns_and_bad_members_are_rejected():
    ch = Channel("drives", members=2, latency_s=0.0)
    ch.add_slowdown(Slowdown("drives", 0.0, 2.0, 0.5))
    with pytest.raises(SpecError, match="overlap"):
        ch.add_slowdown(Slowdown("drives", 1.0, 3.0, 0.5))
    with pytest.raises(SpecError, match="member 5 does not exist"):
        ch.add_slowdown(Slowdown("drives", 5.0, 6.0, 0.5, member=5))
    with pytest.raises(SpecError, match="must be after"):
        Slowdown("drives", 3.0, 3.0, 0.5)


def test_store_counts_and_conserves():
    s = Store("cpu", 100.0, initial_bytes=10.0)
    s.apply("write", 30.0)
    s.apply("read", 5.0)
    s.apply("free", 20.0)
    assert (s.resident_bytes, s.peak_bytes, s.written_bytes, s.read_bytes, s.freed_bytes) == (
        20.0,
        40.0,
        30.0,
        5.0,
        20.0,
    )


def test_a_link_cuts_a_transfer_to_fill_gaps():
    ch = Channel("link", members=1, latency_s=0.0, splittable=True)
    ch.book(2.0, 1.0)  # [2, 3)
    assert ch.book(0.0, 3.0) == 4.0  # 2 s in [0, 2), 1 s in [3, 4)
    assert ch.busy_s == [4.0]
    assert ch.calendar == [[(0.0, 2.0), (2.0, 3.0), (3.0, 4.0)]]
    slow = Channel("drive", members=1, latency_s=0.0, splittable=True)
    slow.add_slowdown(Slowdown("drive", 0.0, 2.0, 0.5))
    slow.book(2.0, 1.0)  # [2, 3)
    assert slow.book(0.0, 2.0) == pytest.approx(4.0)  # 1 s of work in [0, 2) at half speed, 1 s in [3, 4)
