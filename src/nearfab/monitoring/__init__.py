"""Process monitoring: SPC / MSPC models and alarms."""
