"""Telemetry: machine messages in (MQTT or in-process), checked, deduplicated and stored."""

from nearfab.telemetry.gateway import MachineGateway, epoch_ms
from nearfab.telemetry.ingest import IngestReport, PointRow, TelemetryIngestor
from nearfab.telemetry.logic import (
    SUBSCRIPTION,
    MachineState,
    MessageKind,
    MessageRejected,
    MetricSpec,
    parse_message,
    topic_for,
)
from nearfab.telemetry.models import DeadLetter, TelemetryGap, TelemetryMachine, TelemetryRun
from nearfab.telemetry.services import (
    SeriesData,
    SeriesPoint,
    TelemetryService,
    complete_samples,
    from_us,
    to_us,
)
from nearfab.telemetry.transport import (
    BrokerAddress,
    LocalPublisher,
    MqttPublisher,
    MqttSubscriber,
    Publisher,
)

__all__ = [
    "SUBSCRIPTION",
    "BrokerAddress",
    "DeadLetter",
    "IngestReport",
    "LocalPublisher",
    "MachineGateway",
    "MachineState",
    "MessageKind",
    "MessageRejected",
    "MetricSpec",
    "MqttPublisher",
    "MqttSubscriber",
    "PointRow",
    "Publisher",
    "SeriesData",
    "SeriesPoint",
    "TelemetryGap",
    "TelemetryIngestor",
    "TelemetryMachine",
    "TelemetryRun",
    "TelemetryService",
    "complete_samples",
    "epoch_ms",
    "from_us",
    "parse_message",
    "to_us",
    "topic_for",
]
