"""The `auto` policy: a per-site chooser (chooser.py) from a cost model (costmodel.py) of this machine's
measured constants (machine.py)."""

from .chooser import AutoChooser

__all__ = ["AutoChooser"]
