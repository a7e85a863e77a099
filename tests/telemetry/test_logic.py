"""The message scheme: topics, payload checks, and the sequence verdicts."""

from __future__ import annotations

import json

import pytest

from nearfab.telemetry.logic import (
    MessageKind,
    MessageRejected,
    MetricSpec,
    judge_sequence,
    parse_message,
    parse_topic,
    topic_for,
)

DECLARED = {
    "temp": MetricSpec("temp", "°C", "Double"),
    "count": MetricSpec("count", "", "Int"),
    "door": MetricSpec("door", "", "Boolean"),
}


def data(**body: object) -> bytes:
    base: dict[str, object] = {"bdSeq": 1, "seq": 5, "timestamp": 1000, "run": "job1"}
    base.update(body)
    return json.dumps(base).encode()


def test_topic_round_trip() -> None:
    topic = topic_for("site1", "m1", MessageKind.DATA)
    assert topic == "nearfab/v1/site1/m1/data"
    parsed = parse_topic(topic)
    assert (parsed.site, parsed.machine, parsed.kind) == ("site1", "m1", MessageKind.DATA)


@pytest.mark.parametrize(
    "topic", ["nearfab/v2/s/m/data", "nearfab/v1/s/m", "nearfab/v1/s/m/bogus", "nearfab/v1//m/data"]
)
def test_bad_topics_are_refused(topic: str) -> None:
    with pytest.raises(MessageRejected) as err:
        parse_topic(topic)
    assert err.value.code == "bad_topic"


def test_data_points_are_parsed_with_their_types() -> None:
    msg = parse_message(
        "nearfab/v1/s/m/data",
        data(
            metrics=[
                {"name": "temp", "timestamp": 1001, "value": 180.5},
                {"name": "count", "value": 3},
                {"name": "door", "value": True},
            ]
        ),
        DECLARED,
    )
    assert [(p.metric, p.ts_ms, p.value) for p in msg.points] == [
        ("temp", 1001, 180.5),
        ("count", 1000, 3.0),
        ("door", 1000, 1.0),
    ]
    assert msg.run == "job1" and msg.seq == 5 and msg.bd_seq == 1


@pytest.mark.parametrize(
    ("payload", "code", "words"),
    [
        (b"{not json", "bad_json", "not valid JSON"),
        (b"[1, 2]", "bad_json", "JSON object"),
        (data(metrics=[{"name": "pressure", "value": 1.0}]), "unknown_metric", "'pressure'"),
        (data(metrics=[{"name": "temp", "value": "hot"}]), "type", "expected a number"),
        (data(metrics=[{"name": "count", "value": 2.5}]), "type", "expected an integer"),
        (data(metrics=[{"name": "door", "value": 1}]), "type", "expected a boolean"),
        (data(seq=-1, metrics=[]), "type", "seq must be"),
        (data(seq=None, metrics=[]), "type", "seq must be"),
        (data(metrics=[{"name": "temp", "value": 1.0}] * 51), "too_large", "at most 50"),
    ],
)
def test_malformed_data_is_refused_with_the_reason(payload: bytes, code: str, words: str) -> None:
    with pytest.raises(MessageRejected) as err:
        parse_message("nearfab/v1/s/m/data", payload, DECLARED)
    assert err.value.code == code
    assert words in err.value.reason


def test_data_before_any_birth_is_refused() -> None:
    with pytest.raises(MessageRejected) as err:
        parse_message("nearfab/v1/s/m/data", data(metrics=[]), None)
    assert err.value.code == "no_birth"


def test_state_must_be_a_packml_state() -> None:
    with pytest.raises(MessageRejected, match="PackML"):
        parse_message("nearfab/v1/s/m/state", data(state="RUNNING"), DECLARED)
    msg = parse_message("nearfab/v1/s/m/state", data(state="COMPLETE"), DECLARED)
    assert msg.state is not None and msg.state.value == "COMPLETE"


def test_death_has_no_sequence() -> None:
    msg = parse_message(
        "nearfab/v1/s/m/death", json.dumps({"bdSeq": 4, "timestamp": 9}).encode(), None
    )
    assert msg.seq is None and msg.bd_seq == 4


class TestSequence:
    def test_next_in_line_is_accepted(self) -> None:
        v = judge_sequence(1, 6, 1, 5, False, "d", None)
        assert v.accept and v.gap is None and not v.duplicate

    def test_a_jump_opens_a_gap(self) -> None:
        v = judge_sequence(1, 9, 1, 5, False, "d", None)
        assert v.accept and v.gap == (6, 8)

    def test_same_content_again_is_a_duplicate(self) -> None:
        v = judge_sequence(1, 5, 1, 5, False, "d", "d")
        assert v.duplicate and not v.accept

    def test_same_number_other_content_is_from_the_past(self) -> None:
        v = judge_sequence(1, 3, 1, 5, False, "new", "old")
        assert not v.accept and not v.duplicate and "from the past" in (v.reason or "")

    def test_an_older_session_is_from_the_past(self) -> None:
        v = judge_sequence(0, 50, 1, 5, False, "d", None)
        assert not v.accept and "older" in (v.reason or "")

    def test_a_late_message_fills_its_gap(self) -> None:
        assert judge_sequence(1, 7, 1, 9, True, "d", None).accept

    def test_below_high_water_outside_a_gap_is_refused(self) -> None:
        assert not judge_sequence(1, 2, 1, 9, False, "d", None).accept

    def test_a_new_session_starts_afresh(self) -> None:
        v = judge_sequence(2, 0, 1, 900, False, "d", None)
        assert v.accept and v.gap is None
