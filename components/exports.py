"""What leaves the app as data: records as JSON for API clients, and the files a visitor asks for
(exports with their provenance).

    DIFFLLAMA_LENS_EXPORT_DIR   where on-request exports are written (default: a folder in the temp dir)
"""

from __future__ import annotations

import atexit
import csv
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np

from diffllama.provenance import Provenance


def plain(record) -> dict:
    """A record as JSON-able data (numpy arrays as lists; traces left out)."""
    def convert(value):
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items() if k != "trace"}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return value
    return convert({k: v for k, v in asdict(record).items() if k != "trace"} if is_dataclass(record) else record)


# Exports are written only when a visitor asks (an export button), to one folder the app owns. Gradio
# copies a returned file into its own cache (cleaned by the Blocks' delete_cache, and at shutdown), so
# the folder's files are needed only for moments: older ones go at each write, all of them at exit.
EXPORTS = Path(os.environ.get("DIFFLLAMA_LENS_EXPORT_DIR", Path(tempfile.gettempdir()) / "diffllama-lens-exports"))
EXPORT_KEEP_SECONDS = 60


def _export_path(name: str, suffix: str) -> Path:
    EXPORTS.mkdir(parents=True, exist_ok=True)
    for old in EXPORTS.iterdir():
        try:
            if time.time() - old.stat().st_mtime > EXPORT_KEEP_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:  # another request cleaned it first
            pass
    folder = EXPORTS / uuid.uuid4().hex[:12]  # one folder per export: the file keeps its readable name
    folder.mkdir()
    return folder / f"{name}{suffix}"


def remove_exports() -> None:
    shutil.rmtree(EXPORTS, ignore_errors=True)


atexit.register(remove_exports)


def export_json(name: str, data: dict, provenance: Provenance) -> str:
    """``data`` as JSON, with what it was computed from as its first key, "provenance"."""
    path = _export_path(name, ".json")
    path.write_text(json.dumps({"provenance": asdict(provenance), **data}, indent=1))
    return str(path)


def export_csv(name: str, header: list[str], rows: list[list], provenance: Provenance) -> str:
    """A table as CSV, after what it was computed from as "# key: value" lines (pandas:
    ``read_csv(path, comment="#")``; text fields are quoted, so a "#" in a token stays in it)."""
    path = _export_path(name, ".csv")
    with open(path, "w", newline="") as f:
        f.writelines(f"# {line}\n" for line in provenance.lines())
        writer = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)
