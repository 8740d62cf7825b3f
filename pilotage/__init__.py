"""pilotage: steering and reporting engine for subsidised-employment contracts."""

__version__ = "0.1.0"
