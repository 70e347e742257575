#!/usr/bin/env python3
"""Regenerate the tailor.v1 Python stubs (with .pyi) from proto/, or check they are current.

    python scripts/gen_protos.py          # rewrite tailor/v1/*_pb2*.py[i]
    python scripts/gen_protos.py --check  # exit 1 if the committed stubs differ from a fresh build

Generated code lives only in tailor/v1/ and is never edited by hand.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_PACKAGE = ROOT / "tailor" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out_root: Path) -> list[Path]:
    """Compile every proto/tailor/v1/*.proto into out_root/tailor/v1 and return the files written."""
    sources = sorted(PROTO_ROOT.glob("tailor/v1/*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    bindir = Path(sys.executable).parent  # mypy-protobuf's plugins sit beside this interpreter
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *[str(s) for s in sources],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in (out_root / "tailor" / "v1").iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs are stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        current = sorted(p for p in OUT_PACKAGE.iterdir() if p.name.endswith(GENERATED_SUFFIXES))
        if args.check:
            stale = [
                f.name
                for f in fresh
                if not (OUT_PACKAGE / f.name).exists() or not filecmp.cmp(f, OUT_PACKAGE / f.name, shallow=False)
            ]
            extra = sorted({c.name for c in current} - {f.name for f in fresh})
            if stale or extra:
                print(f"generated stubs are stale: {stale + extra}; run: python scripts/gen_protos.py", file=sys.stderr)
                return 1
            print(f"generated stubs are current ({len(fresh)} files)")
            return 0
        for old in current:
            old.unlink()
        for f in fresh:
            shutil.copyfile(f, OUT_PACKAGE / f.name)
        print(f"wrote {len(fresh)} files to {OUT_PACKAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
