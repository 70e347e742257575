"""ops/RUNBOOK.md and the alerts stay in step: every alert's runbook_url opens its own section of the runbook,
every alert section of the runbook names an alert that exists, and each section says what the alert means,
how to confirm it and what to do.

Anchors are computed the way GitHub renders headings, so a link that passes here opens the section there."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
RUNBOOK = OPS / "RUNBOOK.md"
RULE_FILES = sorted((OPS / "prometheus").glob("*.yaml"))
PARTS = ("**Meaning**", "**Confirm**", "**Act**")

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]*)[^)]*\)")
_ALERT_NAME = re.compile(r"Tailor\w+")


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: its text as rendered, lower case, punctuation dropped, spaces as hyphens."""
    text = _LINK.sub(r"\1", heading)  # a link renders as its text
    # Outside code spans (the odd pieces between backticks), emphasis markers are not text; snake_case is.
    pieces = text.split("`")
    pieces[::2] = [re.sub(r"\*+|(?<!\w)_+|_+(?!\w)|<[^>]+>", "", piece) for piece in pieces[::2]]
    return re.sub(r"[^\w\- ]", "", "".join(pieces).lower()).replace(" ", "-")


@dataclass(frozen=True)
class Section:
    level: int
    title: str
    anchor: str
    body: list[str]


def prose(path: Path) -> list[tuple[bool, str]]:
    """The lines of a Markdown file, each with whether it is inside a fenced code block."""
    lines: list[tuple[bool, str]] = []
    fenced = False
    for line in path.read_text().splitlines():
        fence = _FENCE.match(line) is not None
        fenced ^= fence
        lines.append((fenced or fence, line))
    return lines


def sections(path: Path) -> list[Section]:
    """Headings outside code blocks, with GitHub's anchors (a repeated one gets -1, -2, ...) and their text."""
    found: list[Section] = []
    seen: dict[str, int] = {}
    body: list[str] = []
    for code, line in prose(path):
        heading = None if code else _HEADING.match(line)
        if heading is None:
            body.append(line)
            continue
        title = heading.group(2)
        anchor = github_anchor(title)
        repeats = seen.get(anchor, 0)
        seen[anchor] = repeats + 1
        body = []
        found.append(Section(len(heading.group(1)), title, f"{anchor}-{repeats}" if repeats else anchor, body))
    return found


def alerts() -> dict[str, dict[str, Any]]:
    """Every alerting rule in ops/prometheus, by name."""
    found: dict[str, dict[str, Any]] = {}
    for path in RULE_FILES:
        doc = yaml.safe_load(path.read_text())
        for group in doc.get("groups", []) if isinstance(doc, dict) else []:  # rule files only
            for rule in group["rules"]:
                if "alert" in rule:
                    found[rule["alert"]] = rule
    return found


def alert_sections() -> dict[str, Section]:
    """The runbook's alert sections: `##` headed by a name like an alert's, or holding the three parts."""
    found: dict[str, Section] = {}
    for section in sections(RUNBOOK):
        parts = {line.strip() for line in section.body} & set(PARTS)
        if section.level == 2 and (_ALERT_NAME.fullmatch(section.title) or parts):
            assert section.title not in found, f"{RUNBOOK.name}: two sections named {section.title}"
            found[section.title] = section
    return found


def runbook_base() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        repository: str = tomllib.load(f)["project"]["urls"]["Repository"]
    return f"{repository.rstrip('/')}/blob/main/ops/{RUNBOOK.name}#"


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("TailorInstanceDown", "tailorinstancedown"),
        ("How alerts are labelled and routed", "how-alerts-are-labelled-and-routed"),
        ("`TailorInstanceDown` (critical)", "tailorinstancedown-critical"),
        # A heading of benchmarks/README.md that the main README links to, as GitHub renders it.
        (
            "Scaling: processes, cores, and what 10k, 50k, 100k decisions/s need",
            "scaling-processes-cores-and-what-10k-50k-100k-decisionss-need",
        ),
        (
            "With `buf curl` (grpcurl-style, through server reflection)",
            "with-buf-curl-grpcurl-style-through-server-reflection",
        ),
        ("`max_in_flight` and **overload**", "max_in_flight-and-overload"),
        ("See [the README](../README.md)", "see-the-readme"),
    ],
)
def test_github_anchor(heading: str, anchor: str) -> None:
    assert github_anchor(heading) == anchor


def test_repeated_headings_get_numbered_anchors(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("# Notes\n\n## Act\n\n```sh\n# a comment, not a heading\n```\n\n## Act\n")
    assert [s.anchor for s in sections(doc)] == ["notes", "act", "act-1"]


def test_every_alert_has_a_runbook_url_to_its_own_section() -> None:
    defined = alerts()
    assert defined, f"no alerting rules in {[p.name for p in RULE_FILES]}"
    written = alert_sections()
    anchors = {section.anchor for section in sections(RUNBOOK)}
    base = runbook_base()
    problems = []
    for name, rule in sorted(defined.items()):
        url = rule.get("annotations", {}).get("runbook_url")
        if name not in written:
            problems.append(f"{name}: no `## {name}` section in ops/{RUNBOOK.name}")
        elif url != base + written[name].anchor:
            problems.append(f"{name}: runbook_url is {url!r}, its section is {base + written[name].anchor!r}")
        elif url.removeprefix(base) not in anchors:  # belt and braces: the link opens a heading that exists
            problems.append(f"{name}: {url} opens no heading of ops/{RUNBOOK.name}")
    assert not problems, "\n".join(problems)


def test_every_runbook_section_names_an_existing_alert() -> None:
    written = alert_sections()
    assert written, f"ops/{RUNBOOK.name} has no alert sections"
    stale = sorted(set(written) - set(alerts()))
    assert not stale, f"ops/{RUNBOOK.name} has sections for alerts no rule file defines: {stale}"


def test_every_alert_section_says_severity_meaning_confirm_and_act() -> None:
    defined = alerts()
    problems = []
    for name, section in alert_sections().items():
        text = [line.strip() for line in section.body if line.strip()]
        severity = defined.get(name, {}).get("labels", {}).get("severity")
        if severity is not None and not (text and text[0].startswith(f"*{severity}*")):
            problems.append(f"{name}: the section should open with its severity, *{severity}*")
        positions = [text.index(part) if part in text else -1 for part in PARTS]
        if -1 in positions or positions != sorted(positions):
            problems.append(f"{name}: needs {', '.join(PARTS)} (each on its own line, in that order)")
        else:
            for part, start, end in zip(PARTS, positions, [*positions[1:], len(text)], strict=True):
                if end - start < 2:
                    problems.append(f"{name}: {part} is empty")
    assert not problems, "\n".join(problems)


def test_links_in_the_runbook_resolve() -> None:
    """Cross-references between sections, and links to files of the repository (and their headings)."""
    anchors = {section.anchor for section in sections(RUNBOOK)}
    broken = []
    text = "\n".join(line for code, line in prose(RUNBOOK) if not code)
    for target in (match.group(2) for match in _LINK.finditer(text)):
        if "://" in target:
            continue
        path, _, anchor = target.partition("#")
        file = (RUNBOOK.parent / path).resolve() if path else RUNBOOK
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and anchor not in (anchors if file == RUNBOOK else {s.anchor for s in sections(file)}):
            broken.append(f"{target}: no such heading in {file.name}")
    assert not broken, "\n".join(broken)
