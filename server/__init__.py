"""The Tailor server: gRPC servicers, app wiring, configuration, catalogs, stores, metrics and CLI."""

from server.catalogs import Catalog, CatalogError, load_catalog_dir
from server.core import Limits, ServeConfig

from ._app import TailorServer

__all__ = ["Catalog", "CatalogError", "Limits", "ServeConfig", "TailorServer", "load_catalog_dir"]
