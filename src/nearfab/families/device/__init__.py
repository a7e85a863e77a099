"""device: a single-patient-use urine flowmeter printed by FDM (docs/device.md)."""

from nearfab.families.device.family import DeviceFamily

__all__ = ["DeviceFamily"]
