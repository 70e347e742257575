"""`tailor simulate`: synthetic shoppers against a running server (placeholder until implemented)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help="host:port of a running server; default: start an embedded one")


def run(args: argparse.Namespace) -> int:
    raise SystemExit("tailor simulate: not implemented yet")
