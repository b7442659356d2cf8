"""Picks per annotator (lesion_app/lib/activelearning/picks.py) over time, with a clock the test moves."""

from __future__ import annotations

from lesion_app.lib.activelearning.picks import RESERVATION_SECONDS, Picks


def test_reservations_and_skips_end_after_30_minutes() -> None:
    now = [0.0]
    picks = Picks(clock=lambda: now[0])
    picks.reserve("ana", "a")
    picks.skip("ben", "b")
    assert picks.excluded("ben") == {"a", "b"} and picks.held("ana", {"a", "b"}) == "a"
    now[0] = RESERVATION_SECONDS - 1
    assert picks.excluded("ben") == {"a", "b"}
    now[0] = RESERVATION_SECONDS + 1
    assert picks.excluded("ben") == set() and picks.held("ana", {"a", "b"}) is None


def test_a_saved_pick_is_released_and_an_annotator_holds_one_at_a_time() -> None:
    picks = Picks()
    picks.reserve("ana", "a")
    assert picks.held("ana", {"b"}) is None and picks.excluded("ben") == set()  # "a" has a final label now
    picks.reserve("ana", "b")
    picks.reserve("ana", "c")
    assert picks.excluded("ben") == {"c"}


def test_a_released_pick_is_kept_from_no_one() -> None:
    picks = Picks()
    picks.reserve("ana", "a")
    picks.release("ana", "a")
    assert picks.held("ana", {"a"}) is None and picks.excluded("ben") == set() and picks.excluded("ana") == set()
    picks.reserve("ben", "b")
    picks.release("ana", "b")  # not ana's: ben keeps it
    assert picks.excluded("ana") == {"b"}
