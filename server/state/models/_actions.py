"""How often a model has learned each catalog action: the state behind the exploration floor.

An action added to the catalog of a model that has already learned starts with weights no better than
zero; until the model has learned it `until` times (chosen, then learned), Decide gives it at least the
catalog's floor probability (`policy.new_action_floor`). Actions a model starts with are established
(a new model explores all of them alike). Counts are bounded by the catalog: an action removed from it is
forgotten, and is new again if it comes back.

The counts travel with the model: beside each snapshot on disk, in the published metadata in Redis (so
a replica knows them without another round trip).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Version of the counts document (files: `<seq>.json` beside the snapshot; Redis: in the published meta).
ACTIONS_FORMAT = 1
#: The count of an action a model started with: at least any `until_learned` a catalog may set, so raising
#: the threshold later never puts a model's own actions under the floor.
ESTABLISHED = 1_000_000


@dataclass(slots=True)
class LearnedActions:
    counts: dict[str, int] = field(default_factory=dict)
    until: int = 100
    catalog: frozenset[str] = frozenset()
    under_floor: frozenset[str] = frozenset()

    @classmethod
    def established(cls, action_ids: Iterable[str], until: int) -> LearnedActions:
        """A model's own actions: none under the floor (a new model, or one from before the floor existed)."""
        ids = frozenset(action_ids)
        return cls(dict.fromkeys(ids, ESTABLISHED), until, ids)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any] | None, action_ids: Iterable[str], until: int) -> LearnedActions:
        """Counts recorded with a model; without a record (an older model), its actions are established."""
        if not doc:
            return cls.established(action_ids, until)
        tally = cls({str(a): int(n) for a, n in doc.get("counts", {}).items()}, until)
        tally.serve(action_ids, until)
        return tally

    def to_doc(self) -> dict[str, Any]:
        return {"format": ACTIONS_FORMAT, "counts": dict(self.counts)}

    def serve(self, action_ids: Iterable[str], until: int) -> None:
        """The catalog changed (or was loaded): actions the model has not learned yet come under the floor."""
        self.catalog = frozenset(action_ids)
        self.until = until
        self.counts = {a: self.counts.get(a, 0) for a in self.catalog}
        self._refresh()

    def learned(self, action_id: str) -> None:
        """The model learned a decision in which `action_id` was chosen."""
        if action_id in self.under_floor:
            n = self.counts[action_id] = self.counts.get(action_id, 0) + 1
            if n >= self.until:
                self._refresh()

    def _refresh(self) -> None:
        self.under_floor = frozenset(a for a in self.catalog if self.counts.get(a, 0) < self.until)
