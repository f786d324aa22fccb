"""A study's result as Markdown tables laid out like the paper's Table 3 and Table 5, each DiffLlama
layer's λ beside its numbers, and the paired differences between models."""

from __future__ import annotations

from ..analysis import READINGS, measures
from ..analysis.outliers import OUTLIER_RANKS

MEASURES = ("query token", "context", "attention to answer", "attention noise", *(f"{r} reading" for r in READINGS),
            "λ regime", "retrieval accuracy", "QA exact match", "sink score", "sink share", "attention-logit outliers",
            "hidden-state outliers", "95 % CI", "Wilson interval", "paired difference")
FEW = "†"  # marks an interval over fewer than measures.FEW_INPUTS inputs


def cell(ci: dict) -> str:
    """"0.271 [0.250, 0.293]": the mean and its 95 % interval, † when over too few inputs; "—" undefined."""
    if ci["mean"] is None:
        return "—"
    return f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]" + (FEW if ci.get("few") else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(row) + " |" for row in rows]


def _label(name: str, model: dict) -> str:
    return f"{name} ({model['arch']}, {model['map']})"


def _lambda_cells(model: dict, layer: int) -> list[str]:
    entry = model["lambdas"][layer] if model["lambdas"] else None
    return [f"{entry['lambda']:.3f}", f"{entry['row_sum']:.3f}", entry["regime"]] if entry else ["", "", "softmax"]


def _counts(cells: dict) -> dict[str, int]:
    return {label: ci["n"] for label, ci in cells.items()}


def lambdas(result: dict) -> list[str]:
    rows = [[name, str(e["layer"]), f"{e['lambda']:.3f}", f"{e['row_sum']:.3f}", e["regime"], e["note"]]
            for name, model in result["models"].items() for e in model["lambdas"] or []]
    if not rows:
        return []
    return ["", "### λ per layer", "Every DiffLlama number below reads in its layer's regime.", ""] + _table(
        ["model", "layer", "λ", "1 − λ", "regime", "what the layer's map does"], rows)


def _gaps(result: dict) -> list[str]:
    """Why some normalised cells are "—"."""
    notes = []
    for name, model in result["models"].items():
        missing = [e for e in model["lambdas"] or [] if not e["normalised"]]
        if missing:
            notes.append(f"{name}: normalised reading not reported for layer" + ("s " if len(missing) > 1 else " ") +
                         ", ".join(f"{e['layer']} (1 − λ = {e['row_sum']:.3f})" for e in missing) +
                         f", 1 − λ < {measures.NORMALISED_FLOOR}, nor for the mean over layers.")
    return notes


def table3(result: dict) -> list[str]:
    depths = [f"{d:g}" for d in result["depths"]]
    first = next(iter(result["models"].values()))
    counts = _counts(first["found_answer"]["by_depth"])
    header = (["model"] + [f"answer ↑ @{d} (n={counts.get(d, 0)})" for d in depths] +
              [f"noise ↓ @{d} (n={counts.get(d, 0)})" for d in depths] + ["found answer (Wilson)", "n"])
    lines = []
    for reading in READINGS:
        rows = []
        for name, model in result["models"].items():
            allocation = model["allocation"][reading]
            rows.append([_label(name, model)] + [cell(allocation[which]["by_depth"].get(d, {"mean": None}))
                                                 for which in ("answer", "noise") for d in depths] +
                        [cell(model["found_answer"]["overall"]), str(model["found_answer"]["overall"]["n"])])
        default = " (the default)" if reading == READINGS[0] else ""
        lines += ["", f"### Table 3: attention allocation by answer depth, {reading} reading{default}",
                  f"Mean over layers and heads at the query token, 95 % CI in brackets ({FEW}: fewer than "
                  f"{measures.FEW_INPUTS} inputs); n per depth as counted; softmax maps: net = absolute = adds = signed "
                  "= normalised.", ""] + _table(header, rows)
        lines += [f"- {note}" for note in _gaps(result)] if reading == "normalised" else []
    return lines


def by_length(result: dict) -> list[str]:
    shown = ("net", "contribution", "projection")
    header = ["model", "context length", "n", "found answer (Wilson)"] + [f"{which} ({reading})" for reading in shown
                                                                            for which in ("answer ↑", "noise ↓")]
    rows = []
    for name, model in result["models"].items():
        for length, ci in model["found_answer"]["by_length"].items():
            rows.append([_label(name, model), length, str(ci["n"]), cell(ci)] +
                        [cell(model["allocation"][reading][which]["by_length"][length]) for reading in shown
                         for which in ("answer", "noise")])
    return ["", "### Table 3 by context length", ""] + _table(header, rows)


def by_layer(result: dict) -> list[str]:
    lines = []
    for reading in READINGS:
        rows = []
        for name, model in result["models"].items():
            allocation = model["allocation"][reading]
            for layer in range(model["layers"]):
                rows.append([_label(name, model), str(layer), *_lambda_cells(model, layer),
                             cell(allocation["answer"]["by_layer"][layer]), cell(allocation["noise"]["by_layer"][layer]),
                             str(allocation["answer"]["by_layer"][layer]["n"])])
        lines += ["", f"### Table 3 per layer, {reading} reading (mean over heads, λ beside)", ""] + _table(
            ["model", "layer", "λ", "1 − λ", "regime", "answer ↑", "noise ↓", "n"], rows)
    return lines


def differences(result: dict) -> list[str]:
    if not result.get("paired"):
        return []
    depths = [f"{d:g}" for d in result["depths"]]
    lines = ["", "### Paired differences A − B on the same inputs",
             "Mean of per-input differences, 95 % paired-bootstrap CI; an interval above 0: A gives more than B.", ""]
    header = ["A − B", "measure", "overall", *(f"@{d}" for d in depths)]
    rows = []
    for pair, compared in result["paired"].items():
        found = compared["found_answer"]
        rows.append([pair, "found answer", cell(found["overall"]), *(cell(found["by_depth"].get(d, {"mean": None})) for d in depths)])
        for reading in READINGS:
            for which, label in (("answer", "answer ↑"), ("noise", "noise ↓")):
                cells = compared["allocation"][reading][which]
                rows.append([pair, f"{label} ({reading})", cell(cells["overall"]),
                             *(cell(cells["by_depth"].get(d, {"mean": None})) for d in depths)])
    lines += _table(header, rows)
    layer_rows = []
    for pair, compared in result["paired"].items():
        for reading in READINGS:
            cells = compared["allocation"][reading]
            for layer in range(len(cells["answer"]["by_layer"])):
                layer_rows.append([pair, reading, str(layer), cell(cells["answer"]["by_layer"][layer]),
                                   cell(cells["noise"]["by_layer"][layer])])
    if layer_rows:
        lines += ["", "#### Paired differences per layer (λ of each model in the table above)", ""] + _table(
            ["A − B", "reading", "layer", "answer ↑", "noise ↓"], layer_rows)
    return lines


def table5(result: dict) -> list[str]:
    header = ["model", "values"] + [f"top-{k}" for k in OUTLIER_RANKS] + ["median", "count"]
    rows = []
    for name, model in result["models"].items():
        if model["outliers"] is None:
            continue
        for field, what in (("attention_logits", "attention logits"), ("hidden_states", "hidden states")):
            row = model["outliers"][field]
            rows.append([_label(name, model), what] + [f"{row[f'top-{k}']:.2f}" for k in OUTLIER_RANKS] +
                        [f"{row['median']:.3f}", str(row["values"])])
    return ["", "### Table 5: activation outliers over every token of the set (exact)", ""] + _table(header, rows) if rows else []


def sinks(result: dict) -> list[str]:
    header = ["model", "map", "layer", "λ", "1 − λ", "regime", "T (tokens)",
              f"share of heads with sink score > {measures.SINK_THRESHOLD}", "mean sink score"]
    rows = []
    for name, model in result["models"].items():
        for kind, values in model["sinks"].items():
            window = "/".join(str(t) for t in values["window"])
            rows.append([_label(name, model), kind, "all", "", "", "", window, cell(values["share"]), cell(values["score"])])
            rows += [[_label(name, model), kind, str(layer), *_lambda_cells(model, layer), window, cell(by["share"]),
                      cell(by["score"])] for layer, by in enumerate(values["by_layer"])]
    return ["", "### Attention sinks on the first token (mean over inputs, 95 % CI)", ""] + _table(header, rows)


def markdown(result: dict) -> str:
    queries = sorted({model["query"] for model in result["models"].values()})
    lines = [f"## Study: {result['examples']} inputs, {len(result['models'])} models", "",
             f"Query token: {'; '.join(queries)}. Context: the generated passage's characters (a QA input's context).", "",
             measures.markdown(*MEASURES)]
    for part in (lambdas, table3, by_length, by_layer, differences, table5, sinks):
        lines += part(result)
    return "\n".join(lines) + "\n"
