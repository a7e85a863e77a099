"""nearfab: redistributed manufacturing in healthcare, prescription to patient."""

__version__ = "0.1.0"
