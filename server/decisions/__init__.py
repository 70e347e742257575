"""The decision path: a validated Decide query becomes a sampled, logged decision.

`DecisionService.decide` reads the session and any repeated event id (`DecideState`), builds the VW
example (session intent + request context + actions), asks the decision point's policy for a PMF,
samples by event id, and logs the decision before answering.

Imports: `server.sessions`, `server.learning`, `server.state`, `server.catalogs`, `server.core`, `policies`;
never protobuf (that stops at `server.api`).
"""

from ._service import DecideQuery, DecisionService, EventIds, Features, RequestAction

__all__ = ["DecideQuery", "DecisionService", "EventIds", "Features", "RequestAction"]
