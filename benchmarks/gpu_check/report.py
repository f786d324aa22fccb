"""Rows of measurements and checks: printed as they come, summarised as Markdown tables."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class Report:
    """Every row of a run: ``part``, ``what``, ``ok`` (True / False for a check, None for a
    measurement or a skip) and its values."""

    rows: list[dict] = field(default_factory=list)

    def add(self, part: str, what: str, ok: bool | None = None, **values) -> dict:
        row = {"part": part, "what": what, "ok": ok, **values}
        self.rows.append(row)
        verdict = {True: "ok", False: "FAILED", None: "--"}[ok]
        shown = ", ".join(f"{key}={_short(value)}" for key, value in values.items())
        print(f"[{part}] {verdict:6} {what}: {shown}", flush=True)
        return row

    @property
    def failures(self) -> list[dict]:
        return [row for row in self.rows if row["ok"] is False]

    def markdown(self) -> str:
        """One table per part: its rows' values as columns."""
        out = []
        for part in dict.fromkeys(row["part"] for row in self.rows):
            rows = [row for row in self.rows if row["part"] == part]
            columns = list(dict.fromkeys(key for row in rows for key in row if key not in ("part", "what", "ok")))
            out += [f"\n**{part}**\n", "| what | " + " | ".join(columns) + " | verdict |",
                    "|---" * (len(columns) + 2) + "|"]
            for row in rows:
                cells = [_short(row.get(column, "")) for column in columns]
                verdict = {True: "ok", False: "**FAILED**", None: ""}[row["ok"]]
                out.append(f"| {row['what']} | " + " | ".join(cells) + f" | {verdict} |")
        return "\n".join(out)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.rows, indent=1, ensure_ascii=False, default=str))


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[float, float | None, object]:
    """(seconds, peak GPU memory in GB above what was allocated before, result) of one call; the
    peak is None off CUDA."""
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated(device) - before) / 1e9 if device.type == "cuda" else None
    return seconds, peak, result


def free(device: torch.device) -> None:
    """Give cached GPU memory back between parts, so each part's peak is its own."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
