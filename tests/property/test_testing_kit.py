"""trio_pubsub.testing: its strategies make what they promise (issue 19)."""

from __future__ import annotations

import pytest
import trio
from hypothesis import HealthCheck, given, settings, strategies as st

from trio_pubsub import (
    Broker,
    InvalidSubjectError,
    subject_matches,
    validate_pattern,
    validate_subject,
)
from trio_pubsub.testing import (
    drain,
    patterns,
    patterns_matching,
    patterns_near,
    recorder,
    reference_match,
    subjects,
    subjects_matching,
    subjects_near,
    tokens,
)

SMALL = tokens(vocabulary=["a", "b", "orders", "42", "a*", "日本"])


@given(tokens())
def test_tokens_are_literal_tokens(token: str) -> None:
    validate_subject(token)
    assert "." not in token


@given(subjects(), patterns())
def test_subjects_and_patterns_are_valid(subject: str, pattern: str) -> None:
    validate_subject(subject)
    validate_pattern(pattern)
    assert subject.split(".")[0] != "_INBOX"
    assert pattern.split(".")[0] != "_INBOX"


@given(patterns(tokens=SMALL, min_depth=2, max_depth=3, single=False, multi=False))
def test_the_options_shape_the_patterns(pattern: str) -> None:
    assert 2 <= len(pattern.split(".")) <= 3
    assert "*" not in pattern.split(".")
    assert ">" not in pattern.split(".")


@given(st.data(), patterns(tokens=SMALL))
def test_subjects_matching_a_pattern_match_it(
    data: st.DataObject, pattern: str
) -> None:
    subject = data.draw(subjects_matching(pattern, tokens=SMALL))
    validate_subject(subject)
    assert reference_match(pattern, subject)
    assert subject_matches(pattern, subject)


@given(st.data(), subjects(tokens=SMALL))
def test_patterns_matching_a_subject_match_it(
    data: st.DataObject, subject: str
) -> None:
    pattern = data.draw(patterns_matching(subject))
    validate_pattern(pattern)
    assert reference_match(pattern, subject)
    assert subject_matches(pattern, subject)


@given(st.data(), patterns(tokens=SMALL).filter(lambda p: p != ">"))
def test_near_miss_subjects_are_valid_and_do_not_match(
    data: st.DataObject, pattern: str
) -> None:
    subject = data.draw(subjects_near(pattern, tokens=SMALL))
    validate_subject(subject)
    assert not reference_match(pattern, subject)
    assert not subject_matches(pattern, subject)
    # one step away: a token more, a token less, or as many tokens
    assert abs(subject.count(".") - pattern.count(".")) <= 1 or pattern.endswith(">")


@given(st.data(), subjects(tokens=SMALL))
def test_near_miss_patterns_are_valid_and_do_not_match(
    data: st.DataObject, subject: str
) -> None:
    pattern = data.draw(patterns_near(subject, tokens=SMALL))
    validate_pattern(pattern)
    assert not reference_match(pattern, subject)
    assert not subject_matches(pattern, subject)


def test_every_subject_matches_the_full_wildcard_so_none_is_near() -> None:
    with pytest.raises(ValueError, match="matches every subject"):
        subjects_near(">")
    with pytest.raises(InvalidSubjectError):
        subjects_near("a..b")
    with pytest.raises(InvalidSubjectError):
        patterns_near("a.*")


@given(patterns(tokens=SMALL), subjects(tokens=SMALL))
def test_the_reference_matcher_agrees_with_the_broker(
    pattern: str, subject: str
) -> None:
    assert reference_match(pattern, subject) == subject_matches(pattern, subject)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data(), patterns(tokens=SMALL))
def test_a_recorder_sees_what_the_pattern_matches(
    data: st.DataObject, pattern: str
) -> None:
    subject = data.draw(subjects_matching(pattern, tokens=SMALL))
    other = data.draw(subjects(tokens=SMALL))

    async def main() -> None:
        broker = Broker(int)
        async with recorder(broker, pattern) as recording:
            await broker.publish(subject, 1)
            await broker.publish(other, 2)
            expected = [1] + ([2] if reference_match(pattern, other) else [])
            assert recording.payloads == expected
            assert recording.subjects[0] == subject

    trio.run(main)


def test_a_vocabulary_must_hold_tokens() -> None:
    for bad in (["a.b"], ["*"], ["a b"], [""], []):
        with pytest.raises(ValueError, match=r"token|empty"):
            tokens(vocabulary=bad)
    with pytest.raises(InvalidSubjectError):
        subjects_matching("a.>.b")
    with pytest.raises(InvalidSubjectError):
        patterns_matching("a.*")


async def test_a_recorder_that_overflows_says_so() -> None:
    broker = Broker(int)
    async with recorder(broker, "a", max_buffer_size=2) as recording:
        for i in range(3):
            broker.publish_nowait("a", i)
        with pytest.raises(AssertionError, match="dropped 1 message"):
            _ = recording.messages


async def test_drain_takes_what_is_there_up_to_the_end() -> None:
    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        assert drain(sub) == []
        broker.publish_nowait("a", 1)
        broker.publish_nowait("a", 2)
        assert [m.payload for m in drain(sub)] == [1, 2]
        broker.publish_nowait("a", 3)
        await broker.aclose()
        assert [m.payload for m in drain(sub)] == [3]  # then the end
        assert drain(sub) == []


async def test_a_recording_is_read_after_its_block_issue_28() -> None:
    """Read after the block, as pytest's caplog is: what it held when it left.

    Before, leaving discarded what the subscription held, and reading then
    raised "dropped 10 message(s)".
    """
    broker = Broker(int)
    async with recorder(broker, "a") as recording:
        for i in range(10):
            await broker.publish("a", i)
    assert recording.payloads == list(range(10))
    assert recording.subjects == ["a"] * 10
    await broker.publish("a", 10)  # after the block: not recorded
    assert recording.payloads == list(range(10))


async def test_a_recording_that_overflowed_still_says_so_after_its_block() -> None:
    broker = Broker(int)
    async with recorder(broker, "a", max_buffer_size=2) as recording:
        for i in range(3):
            broker.publish_nowait("a", i)
    with pytest.raises(AssertionError, match="dropped 1 message"):
        _ = recording.messages
