"""`tailor simulate`: synthetic shoppers with hidden intents against a running server, over gRPC.

- `_shoppers.py`: the shopper model (pure and seeded; no gRPC).
- `_driver.py`: an embedded `tailor serve` to drive, and the shopper loop.
- `_report.py`: scoring against four baselines, the results table and the plot (needs matplotlib:
  `pip install 'tailor-decisions[sim]'`).
- `_command.py`: the command line.

Imports: `tailor` (the public client), `server.tools.launcher`; never serving code.
"""

from ._command import add_arguments, run
from ._driver import DEFAULT_DECISION_POINT, REWARD_WINDOW_SECONDS, EmbeddedServer, catalog_document
from ._report import missing_plot_extra
from ._shoppers import ACTIONS, INTENTS, Shopper, ShopperFactory, best_single_action, segment_of, segment_rules

__all__ = [
    "ACTIONS",
    "DEFAULT_DECISION_POINT",
    "INTENTS",
    "REWARD_WINDOW_SECONDS",
    "EmbeddedServer",
    "Shopper",
    "ShopperFactory",
    "add_arguments",
    "best_single_action",
    "catalog_document",
    "missing_plot_extra",
    "run",
    "segment_of",
    "segment_rules",
]
