"""`tailor catalog apply DIR --target HOST:PORT [--dry-run]`: make a server's catalogs those of a directory,
through AdminService, showing each diff first.

Two passes, so that one broken file never leaves half a directory applied. First every file is validated by
the server (PutDecisionPoint with `validate_only`, against the version ListDecisionPoints reported) and its
diff printed; `--dry-run` stops there. Then each changed catalog is put with `expected_version` set to the
version it was validated against: an edit someone made in between is never overwritten, it is reported
(ABORTED) and the rest still applied. Decision points the server has and DIR does not are listed and left
as they are: apply never deletes.

The server validates (the checks of `tailor catalog validate`): this tool only reads YAML and speaks gRPC, as
any client would. Exit 0: applied, or nothing to apply; 1: an invalid catalog (nothing applied) or a change
made meanwhile; 2: the directory or the server cannot be used (unreachable, refused, a file that is not a
catalog). The API key is sent, never printed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import grpc
import yaml
from google.rpc import error_details_pb2, status_pb2

from tailor import TailorClient, catalog_struct
from tailor.v1 import admin_service_pb2 as apb

from .client_flags import ClientCredentials, add_client_flags

PROG = "tailor catalog apply"


class DirectoryError(Exception):
    """DIR cannot be applied as it is (exit 2): each problem reads `file: what is wrong`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True, slots=True)
class CatalogFile:
    path: Path
    document: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.document["decision_point"])


@dataclass(frozen=True, slots=True)
class Planned:
    """A file validated by the server: the version it was validated against (0: new) and the preview."""

    file: CatalogFile
    current: int
    preview: apb.PutDecisionPointResponse


@dataclass(frozen=True, slots=True)
class Plan:
    planned: list[Planned]
    #: Invalid catalogs (`file: field: description`) and changes made meanwhile: nothing may be applied.
    problems: list[str]
    #: Decision points the server serves that have no file in DIR.
    elsewhere: list[str]

    @property
    def changes(self) -> list[Planned]:
        return [p for p in self.planned if p.preview.changed]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Apply a catalog directory to a running server through AdminService: every file is validated and its "
        "diff shown first; then the changed ones are applied, each only if nobody changed it meanwhile. "
        "Decision points without a file in DIR are left as they are. Exit 0 when done, 1 on an invalid "
        "catalog (nothing applied) or a conflicting change, 2 when DIR or the server cannot be used."
    )
    parser.add_argument("directory", type=Path, metavar="DIR", help="catalog directory (*.yaml, *.yml)")
    parser.add_argument("--target", required=True, metavar="HOST:PORT", help="the server's gRPC address")
    parser.add_argument("--dry-run", action="store_true", help="show what would change; change nothing")
    add_client_flags(parser)


def read_directory(directory: Path) -> list[CatalogFile]:
    """Every *.yaml / *.yml in DIR as a catalog document; raises DirectoryError listing every unusable file."""
    if not directory.is_dir():
        raise DirectoryError([f"{directory}: not a directory"])
    paths = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not paths:
        raise DirectoryError([f"{directory}: no catalog files (*.yaml, *.yml)"])
    files: list[CatalogFile] = []
    problems: list[str] = []
    seen: dict[str, Path] = {}
    for path in paths:
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as err:
            problems.append(f"{path}: {err.strerror}")
            continue
        except UnicodeDecodeError:
            problems.append(f"{path}: not UTF-8 text")
            continue
        except yaml.YAMLError as err:
            problems.append(f"{path}: not YAML: {_yaml_problem(err)}")
            continue
        name = document.get("decision_point") if isinstance(document, dict) else None
        if not isinstance(name, str) or not name:
            problems.append(f"{path}: not a catalog: a catalog file is a mapping with a decision_point name")
            continue
        if name in seen:
            problems.append(f"{path}: decision_point: {name!r} is already defined in {seen[name].name}")
            continue
        try:
            catalog_struct(document)  # only what JSON can hold travels: say where before asking the server
        except ValueError as err:
            problems.append(f"{path}: {str(err).removeprefix('catalog.')}")
            continue
        seen[name] = path
        files.append(CatalogFile(path, document))
    if problems:
        raise DirectoryError(problems)
    return files


def plan(client: TailorClient, files: Sequence[CatalogFile]) -> Plan:
    """Validate every file against the server's current version of it; nothing changes.

    Raises grpc.RpcError for a refusal that is not about a file (unreachable, unauthenticated, no role)."""
    current = {row.decision_point: row.current.version for row in client.list_decision_points()}
    planned: list[Planned] = []
    problems: list[str] = []
    for f in files:
        at = current.get(f.name, 0)
        try:
            preview = client.put_decision_point(f.document, expected_version=at, validate_only=True)
        except grpc.RpcError as err:
            problems += _file_problems(f, err)
            continue
        planned.append(Planned(f, at, preview))
    in_dir = {f.name for f in files}
    return Plan(planned, problems, sorted(set(current) - in_dir))


def show(plan: Plan, directory: Path, out: TextIO) -> None:
    """Each decision point's header and diff, then the ones left as they are."""
    for p in plan.planned:
        print(_header(p), file=out)
        if p.preview.changed and p.preview.diff:
            print("\n".join(f"    {line}" for line in p.preview.diff.splitlines()), file=out)
    for name in plan.elsewhere:
        print(f"{name}: not in {directory} (left as is)", file=out)


def apply_changes(client: TailorClient, changes: Sequence[Planned], out: TextIO, err: TextIO) -> int:
    """Put each change, guarded by the version it was validated against; 1 if any changed meanwhile.

    Raises grpc.RpcError for any other refusal (what was applied before it has been printed)."""
    conflicts = 0
    for p in changes:
        try:
            done = client.put_decision_point(p.file.document, expected_version=p.current)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.ABORTED:
                raise
            print(f"{p.file.path}: {error.details()}", file=err)
            conflicts += 1
            continue
        print(f"{p.file.name}: applied, version {done.info.version}", file=out)
    return 1 if conflicts else 0


def apply_directory(
    client: TailorClient, directory: Path, dry_run: bool, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """The whole command on a client: read DIR, validate and show, then apply unless `dry_run`; the exit code."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        files = read_directory(directory)
    except DirectoryError as problem:
        for line in problem.problems:
            print(line, file=err)
        return 2
    try:
        found = plan(client, files)
        show(found, directory, out)
        if found.problems:
            for line in found.problems:
                print(line, file=err)
            print(f"{PROG}: {len(found.problems)} problem(s) in {directory}; nothing applied", file=err)
            return 1
        changes = found.changes
        if not changes:
            print("nothing to apply: the server has these catalogs", file=out)
            return 0
        if dry_run:
            print(f"dry run: {len(changes)} change(s) not applied", file=out)
            return 0
        return apply_changes(client, changes, out, err)
    except grpc.RpcError as error:
        print(f"{PROG}: {error.code().name}: {error.details()}", file=err)
        return 2


def run(args: argparse.Namespace) -> int:
    try:
        credentials = ClientCredentials.from_args(args)
    except ValueError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    with TailorClient(
        args.target,
        api_key=credentials.api_key,
        root_certificates=credentials.ca,
        client_cert=credentials.cert,
        client_key=credentials.key,
    ) as client:
        return apply_directory(client, args.directory, args.dry_run)


def _header(p: Planned) -> str:
    name, version = p.file.name, p.preview.info.version
    if not p.preview.changed:
        return f"{name}: unchanged (version {version})"
    if p.current == 0:
        return f"{name}: new" + (f" (re-created as version {version})" if version != 1 else "")
    header = f"{name}: version {p.current} -> {version}"
    if p.preview.model_effect == apb.MODEL_EFFECT_NEW_MODEL:
        header += " (learning flags change: a model of the new flags is served; the current one is kept)"
    return header


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(err).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _file_problems(f: CatalogFile, err: grpc.RpcError) -> list[str]:
    """An invalid catalog or a change made meanwhile, as `file: ...` lines; re-raises any other refusal."""
    if err.code() == grpc.StatusCode.ABORTED:
        return [f"{f.path}: {err.details()}"]
    if err.code() != grpc.StatusCode.INVALID_ARGUMENT:
        raise err
    violations = [f"{f.path}: {v.field.removeprefix('catalog.')}: {v.description}" for v in _field_violations(err)]
    return violations or [f"{f.path}: {err.details()}"]


def _field_violations(err: grpc.RpcError) -> list[Any]:
    """The google.rpc.BadRequest field violations the server attached to an INVALID_ARGUMENT."""
    out: list[Any] = []
    for item in err.trailing_metadata() or ():
        if item.key != "grpc-status-details-bin" or not isinstance(item.value, bytes):
            continue
        status = status_pb2.Status.FromString(item.value)
        for detail in status.details:
            request = error_details_pb2.BadRequest()
            if detail.Unpack(request):
                out += request.field_violations
    return out
