"""Scoring and reporting for `tailor simulate`: the service against four baselines on the same shoppers.

Every policy is scored by the *expected* conversion of the layout it shows each shopper (the model's
known purchase probability), not by sampled purchases: the baselines are then exact, and the
service's curve carries no outcome noise beyond the randomness of its own choices. The realized
conversion rate (purchases the service actually earned) is reported next to it as a sanity check.

- random: the mean over the four layouts (what a uniform policy earns);
- best single action: the layout best for the whole population, shown to everyone;
- segment rule: for each demographic segment, the layout best for that segment's intent mix;
- oracle: the best layout for the shopper's true (hidden) intent.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._driver import Served
from ._shoppers import ACTIONS, INTENTS, Segment, Shopper, segment_of

POLICIES = ("service", "realized", "random", "single", "segment", "oracle")
LABELS = {
    "service": "service (expected)",
    "realized": "service (realized)",
    "random": "random",
    "single": "best single action",
    "segment": "best segment rule",
    "oracle": "oracle",
}

#: The comparison proves nothing unless demographics help a little and behaviour could help a lot.
MIN_SEGMENT_OVER_RANDOM = 1.10
MIN_ORACLE_OVER_SEGMENT = 1.25
#: The issue's measure, after the warm-up.
MIN_SERVICE_OVER_SEGMENT = 1.25
MIN_SERVICE_OVER_ORACLE = 0.80


@dataclass(slots=True)
class Tally:
    """Summed conversion of every policy over a set of shoppers."""

    shoppers: int = 0
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(POLICIES, 0.0))

    def add(self, shopper: Shopper, served: Served, rules: Mapping[Segment, str], single: str) -> None:
        p = shopper.conversion
        s = self.sums
        s["service"] += p[served.action]
        s["realized"] += 1.0 if served.outcome == "purchase" else 0.0
        s["random"] += sum(p.values()) / len(p)
        s["single"] += p[single]
        s["segment"] += p[rules[segment_of(shopper.demographics)]]
        s["oracle"] += max(p.values())
        self.shoppers += 1

    def means(self) -> dict[str, float]:
        n = max(1, self.shoppers)
        return {k: v / n for k, v in self.sums.items()}


@dataclass(slots=True)
class Block:
    """One row of the learning curve: shoppers [start, end) and every policy's mean conversion."""

    start: int
    end: int
    means: dict[str, float]


@dataclass(slots=True)
class Check:
    name: str
    value: float
    minimum: float

    @property
    def passed(self) -> bool:
        return self.value >= self.minimum

    def line(self) -> str:
        verdict = "ok  " if self.passed else "FAIL"
        return f"{verdict} {self.name}: {self.value:.3f} (needs >= {self.minimum:.2f})"


def honesty_checks(overall: Mapping[str, float]) -> list[Check]:
    """Is the problem worth solving? Demographics must help a little, intent a lot (all shoppers)."""
    return [
        Check("segment rule / random", overall["segment"] / overall["random"], MIN_SEGMENT_OVER_RANDOM),
        Check("oracle / segment rule", overall["oracle"] / overall["segment"], MIN_ORACLE_OVER_SEGMENT),
    ]


def measure_checks(after_warmup: Mapping[str, float]) -> list[Check]:
    """The issue's measure: after the warm-up, the service against the segment rule and the oracle."""
    return [
        Check("service / segment rule", after_warmup["service"] / after_warmup["segment"], MIN_SERVICE_OVER_SEGMENT),
        Check("service / oracle", after_warmup["service"] / after_warmup["oracle"], MIN_SERVICE_OVER_ORACLE),
    ]


class PickTally:
    """How often the service showed each layout to each (hidden) intent: where its mistakes are."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def add(self, shopper: Shopper, served: Served) -> None:
        self.counts[shopper.intent, served.action] += 1

    def shares(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for intent in INTENTS:
            total = sum(self.counts[intent.name, a] for a in ACTIONS)
            out[intent.name] = {a: self.counts[intent.name, a] / total if total else 0.0 for a in ACTIONS}
        return out


TABLE_COLUMNS = ("shoppers", *POLICIES, "svc/seg", "svc/orc")


def table_header() -> str:
    return " ".join(f"{c:>9}" for c in TABLE_COLUMNS)


def table_row(block: Block) -> str:
    m = block.means
    cells = [f"{block.end:>9}"] + [f"{m[k]:>9.4f}" for k in POLICIES]
    cells += [f"{m['service'] / m['segment']:>9.2f}", f"{m['service'] / m['oracle']:>9.2f}"]
    return " ".join(cells)


def markdown_table(blocks: Sequence[Block], warmup: int) -> str:
    head = "| shoppers | " + " | ".join(LABELS[k] for k in POLICIES) + " | service / segment | service / oracle |"
    rule = "|" + "---:|" * (len(POLICIES) + 3)
    rows = []
    for b in blocks:
        m = b.means
        mark = " (warm-up)" if b.end <= warmup else ""
        cells = [f"{b.start + 1}-{b.end}{mark}"] + [f"{m[k]:.4f}" for k in POLICIES]
        cells += [f"{m['service'] / m['segment']:.2f}x", f"{m['service'] / m['oracle']:.2f}x"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def write_results(out: Path, results: Mapping[str, Any], blocks: Sequence[Block]) -> list[Path]:
    """results.json (everything), results.md (the tables) and learning_curve.png."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "results.md", out / "learning_curve.png"]
    doc = {**results, "blocks": [asdict(b) for b in blocks]}
    paths[0].write_text(json.dumps(doc, indent=2) + "\n")
    paths[1].write_text(_markdown(results, blocks))
    plot(paths[2], results, blocks)
    return paths


def _markdown(results: Mapping[str, Any], blocks: Sequence[Block]) -> str:
    cfg = results["config"]
    after = results["after_warmup"]
    lines = [
        "# tailor simulate: results",
        "",
        f"`{results['command']}`: {cfg['shoppers']} shoppers, seed {cfg['seed']}, warm-up {cfg['warmup']}, "
        f"{results['run']['seconds']:.0f} s ({results['run']['shoppers_per_second']:.0f} shoppers/s).",
        "",
        "## After the warm-up",
        "",
        "| policy | mean conversion | vs segment rule | vs oracle |",
        "|---|---:|---:|---:|",
    ]
    for k in POLICIES:
        v = after[k]
        lines.append(f"| {LABELS[k]} | {v:.4f} | {v / after['segment']:.2f}x | {v / after['oracle']:.2f}x |")
    lines += ["", "## Checks", ""]
    lines += [f"- {c}" for c in results["checks_text"]]
    lines += ["", f"**{'PASS' if results['passed'] else 'FAIL'}**", "", "## Learning curve", ""]
    lines += [markdown_table(blocks, cfg["warmup"]), "", "![learning curve](learning_curve.png)", ""]
    lines += ["## What the service showed each intent after the warm-up", ""]
    lines += ["| intent | " + " | ".join(ACTIONS) + " |", "|---|" + "---:|" * len(ACTIONS)]
    for intent, shares in results["service_picks_after_warmup"].items():
        best = next(i.best_action for i in INTENTS if i.name == intent)
        cells = [f"**{shares[a]:.0%}**" if a == best else f"{shares[a]:.0%}" for a in ACTIONS]
        lines.append(f"| {intent} | " + " | ".join(cells) + " |")
    lines += ["", "(bold: the intent's best layout)", ""]
    return "\n".join(lines)


#: What the simulator needs beyond serving: matplotlib, for the learning-curve plot.
SIM_EXTRA_INSTALL = "pip install 'tailor-decisions[sim]'   (in a checkout: .venv/bin/pip install -e '.[sim]')"


def missing_plot_extra() -> str | None:
    """Why the plot cannot be drawn (matplotlib missing), or None. Checked before a run, not at its end."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"the learning-curve plot needs matplotlib, from the 'sim' extra: {SIM_EXTRA_INSTALL}"
    return None


def plot(path: Path, results: Mapping[str, Any], blocks: Sequence[Block]) -> None:
    """The learning curve: the service per block against the four baselines on the same shoppers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results["config"]
    x = [b.end for b in blocks]
    fig, ax = plt.subplots(figsize=(10, 5.6), dpi=110)
    baselines = (("oracle", "#2ca02c", "--"), ("segment", "#d62728", "--"), ("single", "#9467bd", ":"),
                 ("random", "#7f7f7f", ":"))  # fmt: skip
    for key, color, linestyle in baselines:
        ax.plot(x, [b.means[key] for b in blocks], label=LABELS[key], color=color, linestyle=linestyle, linewidth=1.6)
    ax.plot(x, [b.means["realized"] for b in blocks], "o", color="#1f77b4", alpha=0.35, markersize=3.5,
            label=LABELS["realized"])  # fmt: skip
    ax.plot(x, [b.means["service"] for b in blocks], color="#1f77b4", linewidth=2.6, label=LABELS["service"])
    after = results["after_warmup"]
    target = max(MIN_SERVICE_OVER_SEGMENT * after["segment"], MIN_SERVICE_OVER_ORACLE * after["oracle"])
    ax.axvspan(0, cfg["warmup"], color="#000000", alpha=0.06, label="warm-up")
    ax.hlines(
        target, cfg["warmup"], x[-1], colors="#ff7f0e", linewidth=1.2, label="target: max(1.25x segment, 0.8x oracle)"
    )
    ax.set_xlim(0, x[-1])
    ax.set_ylim(0, 1.15 * max(b.means["oracle"] for b in blocks))  # from zero: gaps at their true scale
    ax.set_xlabel("shoppers served")
    ax.set_ylabel(f"mean conversion per block of {cfg['block']} shoppers")
    ratio_seg = after["service"] / after["segment"]
    ratio_orc = after["service"] / after["oracle"]
    verdict = "PASS" if results["passed"] else "FAIL"
    ax.set_title(
        f"tailor simulate (seed {cfg['seed']}): after warm-up the service converts "
        f"{ratio_seg:.2f}x the segment rule, {ratio_orc:.2f}x the oracle [{verdict}]",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, ncol=4, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
