"""`lfcc-deploy students`: choose the student by the target's latency budget (see run.py)."""
from .run import StudentsConfig, find_students

__all__ = ["StudentsConfig", "find_students"]
