"""The machine message scheme (Sparkplug-B-like, JSON payloads), parsed and checked without I/O.

Topics: ``nearfab/v1/<site>/<machine>/{birth,data,state,death}``.

- ``birth``  ``{"bdSeq": int, "seq": int, "timestamp": ms, "firmware": str,
  "metrics": [{"name": str, "unit": str, "datatype": "Double"|"Int"|"Boolean"}]}``
  opens a session and declares the metrics the machine will send.
- ``data``   ``{"bdSeq": int, "seq": int, "timestamp": ms, "run": str|null,
  "metrics": [{"name": str, "timestamp": ms, "value": number}]}``
- ``state``  ``{"bdSeq": int, "seq": int, "timestamp": ms, "state": PackML state,
  "run": str|null}``; a run ends with state COMPLETE (or ABORTED) naming it.
- ``death``  ``{"bdSeq": int, "timestamp": ms}``: registered as the MQTT will, so it has no seq.

A message's identity is (machine, bdSeq, seq): bdSeq is the machine's session (boot) number and
grows with each birth; seq grows by one per message within the session. That pair is what
duplicate and gap detection use (a redelivered QoS 1 message repeats it exactly).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

TOPIC_ROOT = "nearfab/v1"
SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/+"
MAX_POINTS_PER_MESSAGE = 50  # keeps a message small enough for constrained gateways


class MessageKind(StrEnum):
    BIRTH = "birth"
    DATA = "data"
    STATE = "state"
    DEATH = "death"


class MachineState(StrEnum):
    """The PackML states a machine reports (ISA-TR88.00.02 subset)."""

    IDLE = "IDLE"
    STARTING = "STARTING"
    EXECUTE = "EXECUTE"
    HELD = "HELD"
    COMPLETE = "COMPLETE"
    ABORTED = "ABORTED"
    STOPPED = "STOPPED"


RUN_END_STATES = frozenset({MachineState.COMPLETE, MachineState.ABORTED})
DATATYPES = ("Double", "Int", "Boolean")


class MessageRejected(ValueError):
    """A message the platform cannot accept; `reason` goes to the dead-letter table."""

    def __init__(self, reason: str, *, code: str = "malformed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True, slots=True)
class Topic:
    site: str
    machine: str
    kind: MessageKind

    def __str__(self) -> str:
        return topic_for(self.site, self.machine, self.kind)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    unit: str
    datatype: str


class Point(NamedTuple):
    """One reading (a tuple: millions go through the hot path)."""

    metric: str
    ts_ms: int
    value: float


@dataclass(frozen=True, slots=True)
class Message:
    """A parsed message. `points` only for data, `metrics` only for birth, `state` for state."""

    topic: Topic
    bd_seq: int
    seq: int | None
    ts_ms: int
    run: str | None = None
    points: tuple[Point, ...] = ()
    metrics: tuple[MetricSpec, ...] = ()
    state: MachineState | None = None
    firmware: str | None = None


def topic_for(site: str, machine: str, kind: MessageKind | str) -> str:
    return f"{TOPIC_ROOT}/{site}/{machine}/{MessageKind(kind).value}"


def parse_topic(topic: str) -> Topic:
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT:
        raise MessageRejected(
            f"topic {topic!r} is not {TOPIC_ROOT}/<site>/<machine>/<kind>", code="bad_topic"
        )
    site, machine, kind = parts[2], parts[3], parts[4]
    if not site or not machine:
        raise MessageRejected(f"topic {topic!r} has an empty site or machine", code="bad_topic")
    try:
        return Topic(site, machine, MessageKind(kind))
    except ValueError:
        raise MessageRejected(
            f"topic {topic!r}: kind {kind!r} is not one of birth, data, state, death",
            code="bad_topic",
        ) from None


def _int(body: dict[str, Any], key: str, *, required: bool = True) -> int | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MessageRejected(f"{key} must be a non-negative integer, not {value!r}", code="type")
    return value


def _str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 64:
        raise MessageRejected(f"{key} must be a string of 1-64 characters", code="type")
    return value


def _metric_specs(body: dict[str, Any]) -> tuple[MetricSpec, ...]:
    raw = body.get("metrics")
    if not isinstance(raw, list):
        raise MessageRejected("birth must declare a metrics list", code="type")
    specs: dict[str, MetricSpec] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise MessageRejected(f"metrics[{i}] must be an object with a name", code="type")
        datatype = item.get("datatype", "Double")
        if datatype not in DATATYPES:
            raise MessageRejected(
                f"metrics[{i}].datatype {datatype!r} is not one of {', '.join(DATATYPES)}",
                code="type",
            )
        unit = item.get("unit", "")
        if not isinstance(unit, str):
            raise MessageRejected(f"metrics[{i}].unit must be a string", code="type")
        specs[item["name"]] = MetricSpec(item["name"], unit, datatype)
    return tuple(specs.values())


def _bad_point(i: int, item: Any, declared: dict[str, MetricSpec] | None) -> MessageRejected:
    """Why point `i` was refused (the slow path, taken only for a bad point)."""
    if not isinstance(item, dict):
        return MessageRejected(f"metrics[{i}] must be an object", code="type")
    name = item.get("name")
    spec = declared.get(name) if declared is not None and isinstance(name, str) else None
    if spec is None:
        return MessageRejected(
            f"metrics[{i}]: metric {name!r} was not declared in the machine's birth",
            code="unknown_metric",
        )
    value = item.get("value")
    if spec.datatype == "Boolean":
        return MessageRejected(
            f"metrics[{i}] {name}: expected a boolean, got {value!r}", code="type"
        )
    if spec.datatype == "Int" and isinstance(value, float):
        return MessageRejected(
            f"metrics[{i}] {name}: expected an integer, got {value!r}", code="type"
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            return MessageRejected(f"metrics[{i}] {name}: value is not finite", code="type")
        return MessageRejected(
            f"metrics[{i}] {name}: timestamp must be epoch milliseconds", code="type"
        )
    return MessageRejected(f"metrics[{i}] {name}: expected a number, got {value!r}", code="type")


def _points(
    body: dict[str, Any], declared: dict[str, MetricSpec] | None, default_ts: int
) -> tuple[Point, ...]:
    raw = body.get("metrics")
    if not isinstance(raw, list):
        raise MessageRejected("data must carry a metrics list", code="type")
    if len(raw) > MAX_POINTS_PER_MESSAGE:
        raise MessageRejected(
            f"data carries {len(raw)} points; at most {MAX_POINTS_PER_MESSAGE} a message",
            code="too_large",
        )
    kinds = {name: spec.datatype for name, spec in (declared or {}).items()}
    isfinite = math.isfinite
    points = []
    for i, item in enumerate(raw):
        # the common case in a few type checks; anything odd is explained by _bad_point
        try:
            name = item["name"]
            value = item["value"]
            ts = item.get("timestamp", default_ts)
            kind = kinds[name]
        except (KeyError, TypeError):
            raise _bad_point(i, item, declared) from None
        tv = type(value)
        if kind == "Double":
            ok = (tv is float and isfinite(value)) or tv is int
        elif kind == "Int":
            ok = tv is int
        else:
            ok = tv is bool
        if not ok or type(ts) is not int or ts < 0:
            raise _bad_point(i, item, declared)
        points.append(Point(name, ts, float(value)))
    return tuple(points)


def parse_message(
    topic: str, payload: bytes | str, declared: dict[str, MetricSpec] | None
) -> Message:
    """Parse and check one message. `declared` are the metrics of the machine's current birth
    (None when no birth is known: data is then refused, since nothing says what it means)."""
    where = parse_topic(topic)
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageRejected(f"payload is not valid JSON ({exc})", code="bad_json") from None
    if not isinstance(body, dict):
        raise MessageRejected("payload must be a JSON object", code="bad_json")
    bd_seq = _int(body, "bdSeq")
    ts = _int(body, "timestamp")
    assert bd_seq is not None and ts is not None  # required above
    if where.kind is MessageKind.DEATH:
        return Message(where, bd_seq, None, ts)
    seq = _int(body, "seq")
    run = _str(body, "run")
    if where.kind is MessageKind.BIRTH:
        firmware = _str(body, "firmware")
        return Message(where, bd_seq, seq, ts, metrics=_metric_specs(body), firmware=firmware)
    if where.kind is MessageKind.STATE:
        try:
            state = MachineState(str(body.get("state")))
        except ValueError:
            raise MessageRejected(
                f"state {body.get('state')!r} is not a PackML state "
                f"({', '.join(s.value for s in MachineState)})",
                code="type",
            ) from None
        return Message(where, bd_seq, seq, ts, run=run, state=state)
    if declared is None:
        raise MessageRejected(
            "data before any birth: the machine has not declared its metrics", code="no_birth"
        )
    return Message(where, bd_seq, seq, ts, run=run, points=_points(body, declared, ts))


# --- the machine side: encoding --------------------------------------------------------------


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def birth_body(
    bd_seq: int, seq: int, ts_ms: int, metrics: list[MetricSpec], firmware: str | None
) -> dict[str, Any]:
    return {
        "bdSeq": bd_seq,
        "seq": seq,
        "timestamp": ts_ms,
        "firmware": firmware,
        "metrics": [{"name": m.name, "unit": m.unit, "datatype": m.datatype} for m in metrics],
    }


def data_body(
    bd_seq: int, seq: int, ts_ms: int, run: str | None, points: list[Point]
) -> dict[str, Any]:
    return {
        "bdSeq": bd_seq,
        "seq": seq,
        "timestamp": ts_ms,
        "run": run,
        "metrics": [{"name": p.metric, "timestamp": p.ts_ms, "value": p.value} for p in points],
    }


def state_body(
    bd_seq: int, seq: int, ts_ms: int, state: MachineState, run: str | None
) -> dict[str, Any]:
    return {"bdSeq": bd_seq, "seq": seq, "timestamp": ts_ms, "state": state.value, "run": run}


def death_body(bd_seq: int, ts_ms: int) -> dict[str, Any]:
    return {"bdSeq": bd_seq, "timestamp": ts_ms}


# --- sequence tracking -----------------------------------------------------------------------


@dataclass(slots=True)
class SequenceVerdict:
    """What to do with a message given what was seen before."""

    accept: bool
    duplicate: bool = False
    gap: tuple[int, int] | None = None  # missing seqs [from, to] opened by this message
    reason: str | None = None  # why not accepted (when not a duplicate)


def judge_sequence(
    bd_seq: int,
    seq: int,
    current_bd_seq: int | None,
    high_water: int | None,
    in_gap: bool,
    digest: str,
    seen_digest: str | None,
) -> SequenceVerdict:
    """Decide on a message from its (bdSeq, seq) and the machine's cursor.

    `high_water` is the highest seq taken in the current session, `in_gap` whether seq is
    inside a recorded gap, `seen_digest` the content digest of a message already taken with
    this (bdSeq, seq), if any: the same digest is a redelivery, another one a reused number."""
    if seen_digest is not None:
        if seen_digest == digest:
            return SequenceVerdict(accept=False, duplicate=True)
        return SequenceVerdict(
            accept=False,
            reason=f"seq {seq} of session {bd_seq} was already used by a different message "
            "(sequence from the past)",
        )
    if current_bd_seq is not None and bd_seq < current_bd_seq:
        return SequenceVerdict(
            accept=False,
            reason=f"session {bd_seq} is older than the machine's current session "
            f"{current_bd_seq} (sequence from the past)",
        )
    if current_bd_seq is None or bd_seq > current_bd_seq or high_water is None:
        return SequenceVerdict(accept=True, gap=(0, seq - 1) if seq > 0 else None)
    if seq > high_water + 1:
        return SequenceVerdict(accept=True, gap=(high_water + 1, seq - 1))
    if seq > high_water:
        return SequenceVerdict(accept=True)
    if in_gap:
        return SequenceVerdict(accept=True)  # a late message filling a gap
    return SequenceVerdict(
        accept=False,
        reason=f"seq {seq} is at or below the last accepted seq {high_water} of session "
        f"{bd_seq} and fills no gap (sequence from the past)",
    )
