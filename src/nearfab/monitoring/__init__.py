"""Process monitoring: SPC / MSPC models trained from qualified runs, online scoring, alarms."""

from nearfab.monitoring.charts import RunCharts
from nearfab.monitoring.enums import (
    AlarmDisposition,
    AlarmStatus,
    ModelKind,
    ModelStatus,
    Severity,
)
from nearfab.monitoring.events import AlarmRaised, MonitoringModelsChanged
from nearfab.monitoring.models import Alarm, MonitoringModel
from nearfab.monitoring.scoring import Monitor
from nearfab.monitoring.services import MonitoringService, alarm_dict, model_dict

__all__ = [
    "Alarm",
    "AlarmDisposition",
    "AlarmRaised",
    "AlarmStatus",
    "ModelKind",
    "ModelStatus",
    "Monitor",
    "MonitoringModel",
    "MonitoringModelsChanged",
    "MonitoringService",
    "RunCharts",
    "Severity",
    "alarm_dict",
    "model_dict",
]
