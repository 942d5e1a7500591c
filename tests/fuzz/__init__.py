"""Fuzz harness for the video layer (``python -m tests.fuzz``, see ``harness.py``)."""
