"""The marketers' web console (`tailor serve --console-port`): Starlette pages served by uvicorn on the serving
event loop, over the same services as AdminService (`server.admin`), sessions and the learner's series.

Imports: `server.admin`, `server.api` (keys and roles), `server.sessions`, `server.learning` (series),
`server.state.catalogs` (diffs), `server.core`, `policies` (intervals). Nothing below imports it.
"""

from ._app import PAGE_ROLES, ConsoleSources, build_console
from ._server import ConsoleServer

__all__ = ["PAGE_ROLES", "ConsoleServer", "ConsoleSources", "build_console"]
