"""Session context on the request path: behaviour events in, intent features and rule rewards out.

- `SessionContext`: folds TrackEvents batches through the session store and credits open decisions by
  their catalogs' reward rules (through the joiner).
- `intent_features` / `intent_text`: a session's state as VW features (namespace `s`), the one place
  where feature engineering of behaviour lives.

Imports: `server.learning`, `server.state`, `server.catalogs`, `server.core`, `policies`.
"""

from ._context import SessionContext
from ._intent import intent_features, intent_text

__all__ = ["SessionContext", "intent_features", "intent_text"]
