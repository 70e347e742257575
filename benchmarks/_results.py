"""What every benchmark does with its results: print the table, write results.json and results.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def publish(out: Path, result: dict[str, Any], table: str) -> None:
    """Print the markdown table and write it, with the full result as JSON, into `out` (committable)."""
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(table)
