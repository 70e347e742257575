"""The SRE material in ops/ stays honest: well-formed files, every metric they query exported by a live server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server.core import LearnConfig
from server.learning import SharedLearner
from tailor.v1 import admin_service_pb2 as apb
from tailor.v1 import decision_service_pb2 as pb

from ..conftest import RunningServer

OPS = Path(__file__).resolve().parents[2] / "ops"
RECORDING_RULES = OPS / "prometheus" / "recording_rules.yaml"
ALERTS = OPS / "prometheus" / "alerts.yaml"
DASHBOARD = OPS / "grafana" / "tailor-dashboard.json"

SEVERITIES = {"critical", "warning", "info"}
# Labels Prometheus attaches at scrape time, not exported by the server.
TARGET_LABELS = {"job", "instance"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_METRIC = re.compile(r"(?<![\w:])tailor_\w+")
_RECORDED = re.compile(r"(?<![\w:])tailor:[\w:]+")
_SELECTOR = re.compile(r"(?<![\w:])(tailor[_:][\w:]*)\s*\{([^}]*)\}")  # exported or recorded series
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_LITERAL_ALTERNATION = re.compile(r"\w+(?:\|\w+)*")


def load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every expression in ops/: rules, alerts, dashboard targets and variable queries."""
    found = [
        (f"{path.name} {rule.get('record') or rule.get('alert')}", str(rule["expr"]))
        for path in (RECORDING_RULES, ALERTS)
        for rule in rules(path)
    ]
    board = dashboard()
    for panel in panels(board):
        found += [(f"{DASHBOARD.name} panel {panel['title']!r}", t["expr"]) for t in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"{DASHBOARD.name} variable {variable['name']}", variable["query"]["query"]))
    return found


def exported(*registries: CollectorRegistry) -> tuple[set[str], dict[str, dict[str, set[str]]]]:
    """Series names a scrape of the registries stores, and the label names (with the values seen) of each series."""
    names: set[str] = set()
    labels: dict[str, dict[str, set[str]]] = {}
    families = (f for r in registries for f in text_string_to_metric_families(generate_latest(r).decode()))
    for family in families:
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
        for sample in family.samples:
            names.add(sample.name)
            for label, value in sample.labels.items():
                labels.setdefault(sample.name, {}).setdefault(label, set()).add(value)
    return names, labels


def exercise(server: RunningServer) -> None:
    """One decision, its reward learned, one failed Decide: enough for the labelled series to have samples."""
    decision = server.client.decide("ops-session", "home_layout", context={"device": "mobile"})
    [result] = server.client.report_rewards([(decision.event_id, 1.0, uuid.uuid4().hex)])
    assert result.status == pb.REWARD_STATUS_ACCEPTED
    with pytest.raises(grpc.RpcError) as failed:
        server.client.decide("ops-session", "no_such_decision_point")
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    learned = {"decision_point": "home_layout", "source": "reward"}
    assert server.wait_for(lambda: server.metric("tailor_learned_examples_total", learned) == 1)


def test_rule_files_have_the_prometheus_rule_file_structure() -> None:
    for path, group_name, kind in ((RECORDING_RULES, "tailor.rules", "record"), (ALERTS, "tailor.alerts", "alert")):
        doc = load_yaml(path)
        assert isinstance(doc, dict), path
        assert set(doc) == {"groups"}, path
        assert [group["name"] for group in doc["groups"]] == [group_name], path
        for group in doc["groups"]:
            assert group["rules"], f"{path.name}: group {group['name']} has no rules"
            for rule in group["rules"]:
                assert kind in rule, f"{path.name}: {rule} has no {kind}"
                assert isinstance(rule.get("expr"), str), f"{path.name}: {rule[kind]} has no expr"
                assert rule["expr"].strip(), f"{path.name}: {rule[kind]} has an empty expr"
        names = [rule[kind] for group in doc["groups"] for rule in group["rules"]]
        assert len(names) == len(set(names)), f"{path.name}: duplicate {kind} names"
    for rule in rules(RECORDING_RULES):
        assert re.fullmatch(r"tailor:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), f"not level:metric:operations: {rule}"

    # Extra check where Prometheus' own validator is installed (apt-get install prometheus ships promtool).
    promtool = shutil.which("promtool")
    if promtool is not None:
        check = subprocess.run(
            [promtool, "check", "rules", str(RECORDING_RULES), str(ALERTS)], capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0, check.stdout + check.stderr


def test_alerts_have_for_severity_summary_description_and_runbook_url() -> None:
    alerts = rules(ALERTS)
    assert alerts
    for alert in alerts:
        name = alert["alert"]
        assert re.fullmatch(r"Tailor[A-Za-z]+", name), name
        assert re.fullmatch(r"\d+[smh]", str(alert.get("for", ""))), f"{name}: for must be a duration"
        assert alert.get("labels", {}).get("severity") in SEVERITIES, f"{name}: labels.severity"
        annotations = alert.get("annotations", {})
        # runbook_url is checked against ops/RUNBOOK.md in test_runbook.py.
        for key in ("summary", "description", "runbook_url"):
            assert isinstance(annotations.get(key), str), f"{name}: annotations.{key}"
            assert annotations[key].strip(), f"{name}: annotations.{key} is empty"


def test_recorded_series_used_anywhere_are_defined_by_the_recording_rules() -> None:
    recorded = {rule["record"] for rule in rules(RECORDING_RULES)}
    undefined = [
        f"{where}: {name}"
        for where, expr in expressions()
        for name in _RECORDED.findall(_STRING.sub('""', expr))
        if name not in recorded
    ]
    assert not undefined, undefined


def test_dashboard_has_its_variables_and_every_panel_queries_something() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["decision_point"]["query"]["query"] == "label_values(tailor_decisions_total, decision_point)"
    data_panels = [p for p in panels(board) if p["type"] != "row"]
    assert len(data_panels) >= 8
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in data_panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel.get("targets"), f"panel {title!r} has no target"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"panel {title!r}: empty expr"
            assert target["refId"], f"panel {title!r}: target without refId"
    titles = " / ".join(p["title"].lower() for p in data_panels)
    for topic in ("decisions", "latency", "rewards", "mean reward", "source", "version", "age", "queue", "errors"):
        assert topic in titles, f"no panel about {topic}"


def test_every_metric_queried_in_ops_is_exported_by_a_live_server(server: RunningServer) -> None:
    exercise(server)
    # Redis mode's `tailor learn` exports what only a shared learner has (tailor_learner_leader); constructing
    # it connects to nothing.
    learner = SharedLearner(
        LearnConfig(catalogs=server.config.catalogs, redis_url="redis://127.0.0.1:1", metrics_port=None)
    )
    names, labels = exported(server.registry, learner.registry)
    # Closed label value sets: a typo in `code="INTERNAL"` or `status=~"late"` would silently never match.
    known_values = {
        "code": {code.name for code in grpc.StatusCode},
        "method": set(pb.DESCRIPTOR.services_by_name["DecisionService"].methods_by_name)
        | set(apb.DESCRIPTOR.services_by_name["AdminService"].methods_by_name),
        "status": labels["tailor_rewards_total"]["status"],  # every status is exported from start-up
    }
    assert {"accepted", "duplicate", "unknown_event", "late", "invalid"} <= known_values["status"]

    problems: list[str] = []
    referenced: set[str] = set()
    for where, expr in expressions():
        for name in _METRIC.findall(_STRING.sub('""', expr)):
            referenced.add(name)
            if name not in names:
                problems.append(f"{where}: {name} is not exported")
        for name, matchers in _SELECTOR.findall(expr):
            for label, op, value in _MATCHER.findall(matchers):
                if label in TARGET_LABELS:
                    continue
                if name in labels and label not in labels[name]:
                    problems.append(f"{where}: {name} has no label {label}")
                if label in known_values and "$" not in value and _LITERAL_ALTERNATION.fullmatch(value):
                    unknown = set(value.split("|")) - known_values[label]
                    if unknown:
                        problems.append(f"{where}: {name}{{{label}{op}{value!r}}}: no such {label} {sorted(unknown)}")
    assert not problems, "\n".join(problems)
    # The material covers the metrics an operator needs, not just a few.
    for needed in (
        "tailor_decisions_total",
        "tailor_decide_latency_seconds_bucket",
        "tailor_rewards_total",
        "tailor_learned_examples_total",
        "tailor_learned_reward_scaled_total",
        "tailor_model_age_seconds",
        "tailor_model_unsnapshotted_examples",
        "tailor_learn_queue_examples",
        "tailor_join_backlog_decisions",
        "tailor_rpc_errors_total",
        "tailor_catalog_reloads_total",
    ):
        assert needed in referenced, f"ops/ never queries {needed}"
