"""Supervision of gateway slots; `get_manager` picks the backend for this tree."""
