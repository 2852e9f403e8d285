"""Doorbell: Raspberry Pi doorbell firmware whose video only the owner's phones can open."""

__version__ = "0.1.0"
