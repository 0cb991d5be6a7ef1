"""The few-shot generation methods, registered by name (see :mod:`mtgan.methods.base`):
Meta Transfer GAN and its ablations, and the baselines it is compared with."""

from mtgan.methods import figr, finetune, frozen, mtgan, scratch  # noqa: F401  (registration)
from mtgan.methods.base import METHODS, Adapted, Context, Fitted, Method, get, parse_methods

__all__ = ["METHODS", "Adapted", "Context", "Fitted", "Method", "get", "parse_methods"]
