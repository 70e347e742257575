"""The README's configuration reference is complete and true: for `tailor serve`, `tailor learn` and the global
flags, every setting the configuration models and the command's parser define is listed with its flag, its
TAILOR_* variable and its default, nothing listed is missing from them, and every flag reaches its setting.

The expected sets are read from the code (pydantic models, argparse parser), so a new field or flag fails here
until the README has its row."""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from server._cli import _config, _learn_config, _parser
from server.core import LearnConfig, ServeConfig

README = Path(__file__).resolve().parents[2] / "README.md"
MODELS: dict[str, type[BaseSettings]] = {"serve": ServeConfig, "learn": LearnConfig}
GLOBAL = "global"

_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_FLAG = re.compile(r"`(--[a-z0-9][a-z0-9-]*)")
_ENV = re.compile(r"`(TAILOR_[A-Z0-9_]+)`")


@dataclass(frozen=True)
class Row:
    flag: str | None
    env: str
    default: str


def readme_tables() -> dict[str, dict[str, Row]]:
    """The tables of the README's "Configuration" section, by command (`global` for the global flags), by env var."""
    text = README.read_text()
    start = text.index("\n## Configuration\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    tables: dict[str, dict[str, Row]] = {}
    for block in re.split(r"\n### ", section)[1:]:
        heading, _, body = block.partition("\n")
        command = re.fullmatch(r"`tailor (\w+)`", heading.strip())
        key = command.group(1) if command else GLOBAL if heading.strip() == "Global flags" else None
        assert key is not None, f"README Configuration: unexpected subsection {heading!r}"
        assert key not in tables, f"README Configuration: two sections for {key}"
        tables[key] = table_rows(key, body)
    return tables


def table_rows(key: str, body: str) -> dict[str, Row]:
    lines = [line.strip() for line in body.splitlines() if line.strip().startswith("|")]
    assert len(lines) > 2, f"README Configuration, {key}: no table"
    header = [cell.strip() for cell in _CELL_SPLIT.split(lines[0].strip("|"))]
    column = {name: header.index(name) for name in ("flag", "environment", "default")}
    rows: dict[str, Row] = {}
    for line in lines[2:]:  # after the header and its |---| line
        cells = [cell.strip() for cell in _CELL_SPLIT.split(line.strip("|"))]
        where = f"README Configuration, {key}: row {line[:60]!r}"
        flag_cell, env_cell = cells[column["flag"]], cells[column["environment"]]
        flags, envs = _FLAG.findall(flag_cell), _ENV.findall(env_cell)
        assert len(envs) == 1 and env_cell == f"`{envs[0]}`", f"{where}: the environment cell must be one `TAILOR_*`"
        assert len(flags) <= 1 and bool(flags) == bool(flag_cell), f"{where}: the flag cell must be empty or one flag"
        assert envs[0] not in rows, f"{where}: {envs[0]} listed twice"
        rows[envs[0]] = Row(flags[0] if flags else None, envs[0], cells[column["default"]].strip("`"))
    return rows


def settings(model: type[BaseSettings]) -> dict[str, tuple[str, FieldInfo]]:
    """A model's settings by env var (field name), nested settings models (Limits) flattened: each is read from
    its own variables."""
    prefix = model.model_config.get("env_prefix", "")
    found: dict[str, tuple[str, FieldInfo]] = {}
    for name, field in model.model_fields.items():
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseSettings):
            found.update(settings(nested))
        else:
            found[f"{prefix}{name}".upper()] = (name, field)
    return found


def documented_default(value: Any, required: bool = False) -> str:
    """A default as the README writes it: numbers plainly, None as unset, lists as the JSON the variable takes."""
    if required:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return json.dumps(list(value), separators=(",", ":"))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def same_default(written: str, value: Any, required: bool = False) -> bool:
    if isinstance(value, int | float) and not isinstance(value, bool) and not required:
        try:
            return float(written.replace(",", "").replace("_", "")) == float(value)
        except ValueError:
            return False
    return written == documented_default(value, required)


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("tailor has no subcommands")


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """A parser's --flags by dest, without --help."""
    return {
        action.dest: action
        for action in parser._actions
        if action.option_strings and not isinstance(action, argparse._HelpAction)
    }


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Defaults as shipped: no TAILOR_* variable from the environment running the tests."""
    for name in list(os.environ):
        if name.startswith("TAILOR_"):
            monkeypatch.delenv(name)
    return monkeypatch


def global_flags() -> dict[str, argparse.Action]:
    return options(_parser())


def test_the_readme_has_a_table_per_command_and_one_for_the_global_flags() -> None:
    assert set(readme_tables()) == {GLOBAL, *MODELS}


@pytest.mark.parametrize("command", sorted(MODELS))
def test_every_setting_of_the_command_is_in_its_table_and_nothing_else(command: str) -> None:
    expected = settings(MODELS[command])
    written = readme_tables()[command]
    missing = sorted(set(expected) - set(written))
    unknown = sorted(set(written) - set(expected))
    assert not missing, f"README, `tailor {command}`: no row for {missing}"
    assert not unknown, f"README, `tailor {command}`: rows for settings that do not exist: {unknown}"


@pytest.mark.parametrize("command", sorted(MODELS))
def test_every_default_in_the_table_is_the_models(command: str) -> None:
    written = readme_tables()[command]
    wrong = []
    for env, (_, field) in settings(MODELS[command]).items():
        if env not in written:
            continue  # the test above names it
        required = field.is_required()
        value = None if required else field.get_default(call_default_factory=True)
        if not same_default(written[env].default, value, required):
            wrong.append(
                f"{env}: README says {written[env].default!r}, the default is {documented_default(value, required)!r}"
            )
    assert not wrong, f"README, `tailor {command}`:\n" + "\n".join(wrong)


@pytest.mark.parametrize("command", sorted(MODELS))
def test_every_flag_of_the_command_is_in_its_table_on_its_settings_row(command: str) -> None:
    command_flags = options(subparsers(_parser())[command])
    shared = set(global_flags())
    fields = {name: env for env, (name, _) in settings(MODELS[command]).items()}
    written = readme_tables()[command]
    problems = []
    for dest, action in sorted(command_flags.items()):
        if dest in shared:
            continue  # a global flag repeated on the command: documented once, in the global table
        flag = action.option_strings[0]
        if dest not in fields:
            problems.append(f"{flag} sets {dest!r}, which {MODELS[command].__name__} does not have")
        elif (row := written.get(fields[dest])) is not None and row.flag != flag:
            problems.append(f"{fields[dest]}: README gives flag {row.flag}, the command has {flag}")
    flagged = {fields[dest] for dest in command_flags if dest in fields}
    for env, row in sorted(written.items()):
        if row.flag is not None and env not in flagged:
            problems.append(f"{env}: README gives flag {row.flag}, which `tailor {command}` does not have")
    assert not problems, f"README, `tailor {command}`:\n" + "\n".join(problems)


def test_the_global_table_lists_every_global_flag_with_its_variable_and_default(
    clean_env: pytest.MonkeyPatch,
) -> None:
    flags = global_flags()
    written = {row.flag: row for row in readme_tables()[GLOBAL].values()}
    expected = {action.option_strings[0]: dest for dest, action in flags.items()}
    assert set(written) == set(expected), (
        f"README global flags: {sorted(map(str, written))}, tailor has {sorted(expected)}"
    )
    problems = []
    for flag, dest in expected.items():
        row, env = written[flag], f"TAILOR_{dest.upper()}"
        if row.env != env:
            problems.append(f"{flag}: README gives {row.env}, the convention is {env}")
            continue
        default = flags[dest].default
        if not same_default(row.default, default):
            problems.append(f"{flag}: README says {row.default!r}, the default is {documented_default(default)!r}")
        # The variable is real: set, it becomes the flag's default.
        clean_env.setenv(env, "from-the-environment")
        if _parser().get_default(dest) != "from-the-environment":
            problems.append(f"{flag}: {env} does not set it")
        clean_env.delenv(env)
    assert not problems, "\n".join(problems)


def given(action: argparse.Action, field: FieldInfo) -> tuple[list[str], Any]:
    """Command-line words that set a flag to a value other than its default, and the value the setting then has."""
    flag = action.option_strings[0]
    if action.nargs == 0:  # a switch
        return [flag], action.const
    if action.type is Path:
        return [flag, f"given-{action.dest}"], Path(f"given-{action.dest}")
    if action.type is int:
        default = field.get_default(call_default_factory=True)
        value = default + 1 if isinstance(default, int) else 1
        return [flag, str(value)], value
    text = "redis://given.invalid:6379/0" if action.dest.endswith("url") else f"given-{action.dest}"
    return [flag, text], text


@pytest.mark.parametrize("command", sorted(MODELS))
def test_every_flag_reaches_its_setting(command: str, clean_env: pytest.MonkeyPatch) -> None:
    """A flag the parser accepts but the command does not pass on would be documented and silently ignored."""
    parser = _parser()
    fields = {name: field for name, field in settings(MODELS[command]).values()}
    shared = set(global_flags())
    argv: list[str] = [command]
    expected: dict[str, Any] = {}
    for dest, action in options(subparsers(parser)[command]).items():
        if dest in shared or dest not in fields:
            continue  # global flags; a flag without a setting fails the test above
        words, expected[dest] = given(action, fields[dest])
        argv += words
    assert expected, f"`tailor {command}` has no flags"
    config = (_config if command == "serve" else _learn_config)(parser.parse_args(argv))
    lost = {dest: getattr(config, dest) for dest, value in expected.items() if getattr(config, dest) != value}
    assert not lost, f"`tailor {' '.join(argv)}` left these settings at other values: {lost}"
