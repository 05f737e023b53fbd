"""Distillation methods, registered by name; adding one is a file here plus one line below."""
from ..registry import Registry
from .base import Method, MethodContext, hard_labels
from .ce import CE
from .dkd import DKD
from .fitnet import FitNet
from .kd import KD
from .lfcc import LFCC
from .ofa import OFA

METHODS: Registry[type[Method]] = Registry("method")
METHODS.register("ce")(CE)
METHODS.register("kd")(KD)
METHODS.register("fitnet")(FitNet)
METHODS.register("ofa")(OFA)
METHODS.register("dkd")(DKD)
METHODS.register("lfcc")(LFCC)

__all__ = ["METHODS", "Method", "MethodContext", "hard_labels"]
