"""Helpers shared by test folders: real servers started on loopback (see ``registry.py``)."""
