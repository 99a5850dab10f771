"""The send worker's pace: 80 a second per number, one every 6 seconds per patient (the cache holds both)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from messaging.pacing import take_number_slot, take_send_slot

AT = datetime(2026, 12, 7, 13, 0, 0, 250000, tzinfo=UTC)


def test_the_81st_send_of_a_second_waits_for_the_next_second():
    waits = [take_number_slot("106540352242922", AT) for _ in range(81)]

    assert waits[:80] == [0.0] * 80
    assert abs(waits[80] - 0.75) < 1e-6
    # The next second has its own 80; another number never shared this one's.
    assert take_number_slot("106540352242922", AT + timedelta(seconds=1)) == 0.0
    assert take_number_slot("1906385232743451", AT) == 0.0


def test_a_patients_second_message_waits_about_6_seconds():
    patient = uuid.uuid4()

    assert take_send_slot(phone_number_id="1", conversation_id=patient, now=AT) == 0.0
    wait = take_send_slot(phone_number_id="1", conversation_id=patient, now=AT + timedelta(seconds=1))

    assert 4.9 <= wait <= 5.0
    # Another patient goes at once.
    assert take_send_slot(phone_number_id="1", conversation_id=uuid.uuid4(), now=AT) == 0.0


def test_a_patient_slot_is_given_back_when_the_number_has_none():
    patient = uuid.uuid4()
    for _ in range(80):
        take_number_slot("2", AT)

    assert take_send_slot(phone_number_id="2", conversation_id=patient, now=AT) > 0
    # The patient was not charged for the send that did not go.
    assert take_send_slot(phone_number_id="2", conversation_id=patient, now=AT + timedelta(seconds=1)) == 0.0
