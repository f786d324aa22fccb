"""Where a number or a figure came from, so one in a paper can be traced back and reproduced: the
models, a hash of the input, the layer / head / map, the versions of the code that computed it, the
time, and the link that reopens the view in the app."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from .interventions.quantize import SUFFIX

PACKAGES = ("torch", "transformers", "gradio", "plotly")  # what computes and draws the numbers
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Provenance:
    """What an export (CSV, JSON, PNG) was computed from."""

    models: dict[str, str]  # slot ("A", "B") -> the model source as typed
    input_sha256: str  # ``input_hash`` of the inputs that produced it
    versions: dict[str, str]  # package -> version, and "app" -> the app's git commit
    created: str  # UTC, ISO 8601 to the second
    layer: int | None = None
    head: int | None = None
    kind: str | None = None  # the map asked for (matched per model: a Llama shows "softmax" for "diff")
    link: str | None = None  # opens the same view in the app, or why there is none

    def lines(self) -> list[str]:
        """"key: value" lines, one per field (a CSV's leading comment lines)."""
        values = {"models": ", ".join(f"{slot}={source}" for slot, source in self.models.items()),
                  "input_sha256": self.input_sha256,
                  "layer": self.layer, "head": self.head, "kind": self.kind,
                  "versions": ", ".join(f"{name} {version}" for name, version in self.versions.items()),
                  "created": self.created, "link": self.link}
        return [f"{key}: {value}" for key, value in values.items() if value is not None]


def input_hash(inputs: dict) -> str:
    """The first 16 hex digits of the SHA-256 of ``inputs`` (the tab's inputs by parameter name, e.g.
    ``{"text": …}``) written as JSON with sorted keys: the same inputs give the same hash."""
    text = json.dumps(inputs, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@functools.cache
def package_versions() -> dict[str, str]:
    """Versions of the packages that compute and draw the numbers, and the app's commit (read once:
    neither changes while the process runs)."""
    return {name: _version(name) for name in PACKAGES} | {"app": app_commit()}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def app_commit() -> str:
    """The app's git commit ("-dirty" when files differ from it): ``DIFFLLAMA_LENS_COMMIT`` when set
    (the Dockerfile sets it from ``--build-arg GIT_COMMIT``), else git's answer, or why there is none
    (a Space or a container holds the files without their history)."""
    if os.environ.get("DIFFLLAMA_LENS_COMMIT", "unknown") != "unknown":
        return os.environ["DIFFLLAMA_LENS_COMMIT"]
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=ROOT, capture_output=True,
                              text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (no git)"
    return done.stdout.strip() if done.returncode == 0 else "unknown (not a git checkout)"


def provenance(models: dict[str, str], inputs: dict, layer: int | None = None, head: int | None = None,
               kind: str | None = None, link: str | None = None) -> Provenance:
    """The provenance of an export computed now from ``models`` and ``inputs`` (a quantized model, named
    ``source#scheme``, adds the version of torchao, which quantized it)."""
    versions = package_versions()
    if any(SUFFIX in source for source in models.values()):
        versions = versions | {"torchao": _version("torchao")}
    return Provenance(dict(models), input_hash(inputs), versions,
                      datetime.now(timezone.utc).isoformat(timespec="seconds"), layer, head, kind, link)
