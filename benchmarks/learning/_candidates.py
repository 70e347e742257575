"""The candidate defaults: VW interactions, ignored linear namespaces and SquareCB's gamma_scale."""

from __future__ import annotations

from dataclasses import dataclass

from policies import LearningSpec, SquareCB

#: The reference every candidate is held against: VW's own recommended contextual-bandit flags, in process.
REFERENCE_ARGS = "--cb_explore_adf --squarecb -q ca --cubic cca --ignore_linear c"
#: Tailor's flags today, the baseline of the CPU column.
BASELINE = "0.1: ca sa"
#: The same flags through the service: the reference on the simulator, whose rounds need the service's
#: session context and so cannot be replayed in process.
SERVICE_REFERENCE = "VW reference flags: ca cca, ignore c"


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    interactions: tuple[str, ...]
    ignore_linear: tuple[str, ...] = ()
    gamma_scale: float = 10.0

    def spec(self) -> LearningSpec:
        return LearningSpec(
            exploration=SquareCB(gamma_scale=self.gamma_scale),
            interactions=self.interactions,
            ignore_linear=self.ignore_linear,
        )

    def catalog_learning(self) -> dict[str, object]:
        """The catalog keys that ask for this candidate."""
        return {"interactions": list(self.interactions), "ignore_linear": list(self.ignore_linear)}

    def catalog_exploration(self) -> dict[str, object]:
        return {"algorithm": "squarecb", "gamma_scale": self.gamma_scale}


CANDIDATES: dict[str, Candidate] = {
    c.name: c
    for c in (
        Candidate("0.1: ca sa", ("ca", "sa")),
        Candidate("VW reference flags: ca cca, ignore c", ("ca", "cca"), ("c",)),
        Candidate("ca sa, ignore c", ("ca", "sa"), ("c",)),
        Candidate("ca sa cca", ("ca", "sa", "cca")),
        Candidate("ca sa cca, ignore c", ("ca", "sa", "cca"), ("c",)),
        Candidate("ca sa csa, ignore c", ("ca", "sa", "csa"), ("c",)),
        Candidate("ca sa cca csa, ignore c", ("ca", "sa", "cca", "csa"), ("c",)),
        Candidate("ca sa, ignore c, gamma 30", ("ca", "sa"), ("c",), 30.0),
        Candidate("ca sa, ignore cs, gamma 20", ("ca", "sa"), ("c", "s"), 20.0),
        Candidate("ca sa cca, ignore c, gamma 100", ("ca", "sa", "cca"), ("c",), 100.0),
        Candidate("ca sa cca, ignore c, gamma 1000", ("ca", "sa", "cca"), ("c",), 1000.0),
    )
}

#: Played on the simulator by default (each run takes a minute or more): the baseline, the reference flags,
#: and the candidates that lead in process or differ in what they cross with the session namespace.
SIMULATOR_DEFAULT = (
    BASELINE,
    SERVICE_REFERENCE,
    "ca sa, ignore c",
    "ca sa cca",
    "ca sa csa, ignore c",
    "ca sa, ignore c, gamma 30",
    "ca sa, ignore cs, gamma 20",
)
