"""Tailor's public API: the generated `tailor.v1` stubs and a typed client for gateways."""

from .client import TailorClient, feature_map

__all__ = ["TailorClient", "feature_map"]
