"""solid_dose: personalised 3D-printed tablets."""

from nearfab.families.solid_dose.family import SolidDoseFamily

__all__ = ["SolidDoseFamily"]
