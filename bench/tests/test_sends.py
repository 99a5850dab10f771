"""The sends bench's arithmetic: the pace over any 1-second window, the sustained rate, and each message's fate."""

from __future__ import annotations

from bench.sends import check_outcome, lowest_rolling_rate, max_in_window, per_second, sustained_rate


def test_the_busiest_window_straddles_two_wall_clock_seconds():
    # 80 at the end of one second and 80 at the start of the next: each second holds 80, a window 160.
    times = [10.9 + i * 0.001 for i in range(80)] + [11.0 + i * 0.001 for i in range(80)]

    assert per_second(times, 10.0) == [80, 80]
    assert max_in_window(times) == (160, 10.9)


def test_a_window_is_half_open():
    assert max_in_window([0.0, 0.5, 1.0, 1.5]) == (2, 0.0)
    assert max_in_window([]) == (0, None)


def test_the_sustained_rate_counts_intervals_between_the_first_and_the_last_send():
    assert sustained_rate([0.0, 0.5, 1.0, 1.5, 2.0]) == 2.0
    assert sustained_rate([3.0]) == 0.0


def test_the_lowest_rolling_rate_finds_a_pause():
    steady = [i / 80 for i in range(80 * 20)]  # 80 a second for 20 s
    paused = [t for t in steady if not 8.0 <= t < 10.0]  # 2 s without a send

    assert lowest_rolling_rate(steady) == 80.0
    assert lowest_rolling_rate(paused) == 48.0  # 3 s of 5 at 80 a second
    assert lowest_rolling_rate([0.0, 1.0]) is None


def test_each_message_is_judged_by_what_the_fake_received():
    messages = [
        ("m-sent", "read", True),
        ("m-twice", "delivered", True),
        ("m-lost", "sending", True),  # the worker died after marking it: never sent
        ("m-lost-arrived", "sending", True),  # sent, its status event not applied yet
        ("m-queued", "queued", False),
        ("m-settled-unseen", "sent", True),
    ]
    references = ["m-sent", "m-twice", "m-twice", "m-lost-arrived", "stranger", None]

    outcome = check_outcome(references, messages)

    assert outcome.duplicates == {"m-twice": 2}
    assert outcome.settled == 1
    assert (outcome.answer_lost, outcome.waiting_status) == (2, 1)
    assert outcome.unknown_references == ["stranger"]
    assert outcome.not_sent == ["m-queued queued (received 0x)", "m-settled-unseen sent (received 0x)"]
    assert outcome.statuses == {"read": 1, "delivered": 1, "sending": 2, "queued": 1, "sent": 1}
    assert not outcome.ok
    assert check_outcome(["m-sent"], [("m-sent", "read", True)]).ok
