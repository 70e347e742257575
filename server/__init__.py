"""The Tailor server: gRPC servicers, app wiring, configuration, catalogs, stores, metrics and CLI."""

from ._app import TailorServer
from ._catalog import Catalog, CatalogError, load_catalog_dir
from ._config import Limits, ServeConfig

__all__ = ["Catalog", "CatalogError", "Limits", "ServeConfig", "TailorServer", "load_catalog_dir"]
