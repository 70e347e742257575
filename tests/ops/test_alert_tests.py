"""The alerts in ops/prometheus are unit-tested with `promtool test rules`: the tests pass, and every alert has a
case where it fires and a case where it must stay quiet."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

PROMETHEUS = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
RECORDING_RULES = PROMETHEUS / "recording_rules.yaml"
ALERTS = PROMETHEUS / "alerts.yaml"
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*_test.yaml"))


def load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def alert_names() -> set[str]:
    return {rule["alert"] for group in load_yaml(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule}


def alert_cases(path: Path) -> list[dict[str, Any]]:
    """Every alert_rule_test case of a promtool test file."""
    return [case for test in load_yaml(path)["tests"] for case in test.get("alert_rule_test") or []]


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: the alert tests need it. Run scripts/test (it installs Debian's prometheus "
            "package) or `apt-get install --no-install-recommends prometheus`."
        )
    return found


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=PROMETHEUS.parents[1])


def test_promtool_checks_the_rule_files(promtool: str) -> None:
    check = run([promtool, "check", "rules", str(RECORDING_RULES), str(ALERTS)])
    assert check.returncode == 0, f"promtool check rules failed:\n{check.stdout}{check.stderr}"


def test_there_are_alert_test_files() -> None:
    assert TEST_FILES, f"no *_test.yaml in {PROMETHEUS / 'tests'}"


@pytest.mark.parametrize("path", TEST_FILES, ids=[path.name for path in TEST_FILES])
def test_promtool_alert_unit_tests_pass(promtool: str, path: Path) -> None:
    result = run([promtool, "test", "rules", str(path)])
    assert result.returncode == 0, f"promtool test rules {path.name} failed:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("path", TEST_FILES, ids=[path.name for path in TEST_FILES])
def test_alert_test_files_load_both_rule_files(path: Path) -> None:
    loaded = {(path.parent / name).resolve() for name in load_yaml(path)["rule_files"]}
    assert loaded == {RECORDING_RULES, ALERTS}, f"{path.name}: rule_files must be the two files in {PROMETHEUS.name}/"


def test_every_alert_has_a_firing_case_and_a_quiet_case() -> None:
    defined = alert_names()
    assert defined
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for case in alert_cases(path):
            name = case["alertname"]
            # A name no rule defines never fires: with a typo, a quiet case would pass whatever the alert does.
            assert name in defined, f"{path.name}: alertname {name} is not defined in {ALERTS.name}"
            (firing if case.get("exp_alerts") else quiet).add(name)
    assert not defined - firing, f"alerts without a test case where they fire: {sorted(defined - firing)}"
    assert not defined - quiet, f"alerts without a test case where they stay quiet: {sorted(defined - quiet)}"
