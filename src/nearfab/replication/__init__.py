"""Sites as nodes: each node's outbox, replicated over MQTT to the others' inboxes, with gaps,
duplicates and forks named (docs/replication.md, issue 17)."""

from nearfab.replication.alerts import site_alerts
from nearfab.replication.capture import CaptureConfig, capture_config, install_capture
from nearfab.replication.enums import ProblemKind, RecordKind
from nearfab.replication.logic import Record, origin_filter, parse_message, topic, verify_chain
from nearfab.replication.node import CONTROL_TO_SITES, node_capture, replicate_once, start_inbox
from nearfab.replication.services import (
    Applied,
    OriginStatus,
    OutboxStatus,
    ReplicationService,
    SendResult,
)
from nearfab.replication.transport import InboxSubscriber, OutboxPublisher

__all__ = [
    "CONTROL_TO_SITES",
    "Applied",
    "CaptureConfig",
    "InboxSubscriber",
    "OriginStatus",
    "OutboxPublisher",
    "OutboxStatus",
    "ProblemKind",
    "Record",
    "RecordKind",
    "ReplicationService",
    "SendResult",
    "capture_config",
    "install_capture",
    "node_capture",
    "origin_filter",
    "parse_message",
    "replicate_once",
    "site_alerts",
    "start_inbox",
    "topic",
    "verify_chain",
]
