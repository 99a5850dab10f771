"""The floor: a reference app that is not ours to tune (see settings.py)."""
