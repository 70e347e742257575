"""The Tailor server, one room per stage of the data flow (docs/architecture.md has the full map).

`_cli` (the `tailor` command) and `_app` (wiring, lifecycle) sit on top of `api` (the gRPC face),
`decisions`, `sessions`, `learning`, `state` (memory and Redis backends side by side), `catalogs` and
`core`; each imports only the rooms below it (checked by import-linter in the gate). `tools` (launcher,
simulator, local cluster) drives the server from outside and is never imported by serving code.
"""

import os

# gRPC's C core reads GRPC_VERBOSITY once, when grpc is first imported (through the rooms below), and writes
# straight to stderr in its own format: keep it to errors unless the operator chose a level, so that in
# normal operation every line the process writes comes from logging (one JSON object each with
# `--log-format json`). GRPC_TRACE is left alone.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from server.catalogs import Catalog, CatalogError, load_catalog_dir
from server.core import Limits, ServeConfig

from ._app import TailorServer

__all__ = ["Catalog", "CatalogError", "Limits", "ServeConfig", "TailorServer", "load_catalog_dir"]
