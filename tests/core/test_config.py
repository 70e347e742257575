"""Configuration: flags over TAILOR_* variables over defaults; bad values are clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server import ServeConfig


def test_defaults_match_the_documented_contract() -> None:
    config = ServeConfig()
    assert (config.port, config.metrics_port, config.data_dir) == (50051, 9464, Path("data"))
    assert config.snapshot_interval_seconds == 30
    assert config.limits.max_id_bytes == 256 and config.limits.max_actions == 256
    assert config.limits.max_action_features == 64 and config.limits.max_context_features == 256
    assert config.limits.max_batch == 1000 and config.limits.max_message_bytes == 4 * 1024 * 1024


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAILOR_PORT", "6000")
    monkeypatch.setenv("TAILOR_MAX_ACTIONS", "512")
    monkeypatch.setenv("TAILOR_SNAPSHOT_INTERVAL_SECONDS", "2.5")
    config = ServeConfig()
    assert config.port == 6000 and config.limits.max_actions == 512 and config.snapshot_interval_seconds == 2.5
    assert ServeConfig(port=7000).port == 7000  # an explicit value (a flag) wins


def test_bad_environment_value_is_a_clear_cli_error(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"TAILOR_PORT": "not-a-port", "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 2
    assert "port" in run.stderr and "Traceback" not in run.stderr
