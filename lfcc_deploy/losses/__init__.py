"""Distillation methods, registered by name; adding one is a file here plus one line below."""
from ..registry import Registry
from .base import Method, MethodContext
from .ce import CE
from .kd import KD

METHODS: Registry[type[Method]] = Registry("method")
METHODS.register("ce")(CE)
METHODS.register("kd")(KD)

__all__ = ["METHODS", "Method", "MethodContext"]
