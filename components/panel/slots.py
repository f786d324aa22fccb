"""Which models a view shows ("A", "B", or both side by side), and which of each model's maps matches
the kind asked for: a DiffLlama's ``diff`` ↔ a standard model's ``softmax``, so one choice shows
comparable maps of both models at the same layer and head."""

from __future__ import annotations

SIDE_BY_SIDE = "A and B"
SLOTS = (SIDE_BY_SIDE, "A", "B")
KINDS = ("diff", "a1", "a2", "softmax")


def kind_for(trace, kind: str, value: str = "weight") -> str:
    """``kind`` where the model has it, else the model's own main map: the differential map for a
    DiffLlama asked for ``softmax``, the softmax map for a standard model asked for ``diff``/``a1``/``a2``.
    Contributions (``value``) come only from the main map, the one a head applies to its values."""
    if kind not in KINDS:
        raise ValueError(f"unknown map {kind!r}; choose one of {', '.join(KINDS)}")
    return kind if kind in trace.kinds and value == "weight" else trace.kinds[0]


def shown_slots(run, slot: str) -> list[str]:
    if slot == SIDE_BY_SIDE:
        return [s for s in ("A", "B") if s in run.traces]
    if slot not in run.traces:
        raise ValueError(f"there is no model {slot!r}; choose one of {', '.join(SLOTS)}")
    return [slot]


def window_note(run, slot: str, trace) -> str:
    """Which part of a long input the trace holds (a QA window)."""
    if run.windows.get(slot, (0, 1))[1] <= 1:
        return ""
    shown, total = run.windows[slot]
    chars = [o for o, s in zip(trace.offsets, trace.sequence_ids) if s == 1]
    return f"QA window {shown + 1} of {total} (context characters {chars[0][0]}–{chars[-1][1]})"


def slot_notes(run, slot: str, trace, kind: str, asked: str) -> list[str]:
    """What a model's view shows instead of what was asked for, and which part of the input it read."""
    if kind == asked:
        notes = []
    elif asked in trace.kinds:  # a DiffLlama's A1 or A2 with contributions asked for
        notes = [f"contributions come from {kind!r}, the map the head applies to its values: showing those"]
    else:
        notes = [f"{trace.arch} has no {asked!r} map: showing its {kind!r} map"]
    where = window_note(run, slot, trace)
    return [f"**{slot}** ({trace.arch}): {n}" for n in notes + ([where] if where else [])]


def fits(trace, slot: str, side_by_side: bool, layer: int, head: int, kind: str) -> str | None:
    """None when ``trace`` has this layer and head; otherwise, for one of two models side by side, why
    it shows nothing (a single model's view raises instead)."""
    try:
        trace.check(layer, head, kind)
    except ValueError as error:
        if not side_by_side:
            raise
        return f"**{slot}** ({trace.arch}): {error}"
    return None


def each_shown(run, slot: str, layer: int, head: int, kind: str, value: str = "weight"):
    """(slot, trace, matched kind) of every model the view shows at this layer and head, and the notes:
    what each shows instead of what was asked, and why a model side by side shows nothing."""
    shown, notes = [], []
    for s in shown_slots(run, slot):
        trace = run.traces[s]
        matched = kind_for(trace, kind, value)
        problem = fits(trace, s, slot == SIDE_BY_SIDE, layer, head, matched)
        if problem:
            notes.append(problem)
            continue
        notes += slot_notes(run, s, trace, matched, kind)
        shown.append((s, trace, matched))
    return shown, notes
