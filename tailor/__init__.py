"""Tailor's public API: the generated `tailor.v1` stubs and a typed client for gateways."""

from .client import TailorClient, catalog_dict, catalog_struct, feature_map

__all__ = ["TailorClient", "catalog_dict", "catalog_struct", "feature_map"]
