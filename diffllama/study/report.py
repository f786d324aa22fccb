"""A study's result as Markdown tables laid out like the paper's Table 3 and Table 5."""

from __future__ import annotations

from ..analysis import READINGS, measures
from ..analysis.outliers import OUTLIER_RANKS
from ..analysis.sinks import SINK_THRESHOLD


def cell(ci: dict) -> str:
    """"0.271 [0.250, 0.293]": the mean and its 95 % CI."""
    if ci["mean"] is None:
        return "—"
    return f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(row) + " |" for row in rows]


def _models(result: dict, reading: str):
    """(label, model summary) for each model; a softmax model's readings are equal, so it is shown once."""
    for name, model in result["models"].items():
        if model["map"] == "diff" or reading == READINGS[0]:
            yield f"{name} ({model['arch']}, {model['map']})", model


def table3(result: dict) -> list[str]:
    depths = [f"{d:g}" for d in result["depths"]]
    lines = []
    for reading in READINGS:
        header = ["model"] + [f"answer ↑ @{d}" for d in depths] + [f"noise ↓ @{d}" for d in depths] + ["found answer", "n"]
        rows = []
        for label, model in _models(result, reading):
            allocation = model["allocation"][reading]
            rows.append([label] + [cell(allocation[which]["by_depth"].get(d, {"mean": None})) for which in ("answer", "noise")
                                   for d in depths] + [cell(model["found_answer"]["overall"]), str(model["examples"])])
        shown = reading if reading != READINGS[0] else f"{reading} (softmax models: every reading)"
        lines += ["", f"### Table 3: attention allocation by answer depth, {shown} reading",
                  "Mean over layers and heads, 95 % CI in brackets; found answer: retrieval accuracy or QA exact match.",
                  ""] + _table(header, rows)
    return lines


def by_length(result: dict) -> list[str]:
    header = ["model", "context length", "n", "found answer"] + [f"{which} ({reading})" for reading in READINGS
                                                                  for which in ("answer ↑", "noise ↓")]
    rows = []
    for label, model in _models(result, READINGS[0]):
        found = model["found_answer"]["by_length"]
        for length, ci in found.items():
            rows.append([label, length, str(ci["n"]), cell(ci)] +
                        [cell(model["allocation"][reading][which]["by_length"][length]) for reading in READINGS
                         for which in ("answer", "noise")])
    return ["", "### Table 3 by context length", ""] + _table(header, rows)


def by_layer(result: dict) -> list[str]:
    header = ["model", "layer"] + [f"{which} ({reading})" for reading in READINGS for which in ("answer ↑", "noise ↓")]
    rows = []
    for label, model in _models(result, READINGS[0]):
        for layer in range(len(model["allocation"][READINGS[0]]["answer"]["by_layer"])):
            rows.append([label, str(layer)] + [cell(model["allocation"][reading][which]["by_layer"][layer])
                                               for reading in READINGS for which in ("answer", "noise")])
    return ["", "### Table 3 per layer (mean over heads)", ""] + _table(header, rows)


def table5(result: dict) -> list[str]:
    header = ["model", "values"] + [f"top-{k}" for k in OUTLIER_RANKS] + ["median", "count"]
    rows = []
    for label, model in _models(result, READINGS[0]):
        for field, what in (("attention_logits", "attention logits"), ("hidden_states", "hidden states")):
            row = model["outliers"][field]
            rows.append([label, what] + [f"{row[f'top-{k}']:.2f}" for k in OUTLIER_RANKS] + [f"{row['median']:.3f}", str(row["values"])])
    return ["", "### Table 5: activation outliers over every token of the set (exact)", ""] + _table(header, rows)


def sinks(result: dict) -> list[str]:
    header = ["model", "map", f"share of heads with sink score > {SINK_THRESHOLD}", "mean sink score"]
    rows = [[label, kind, cell(values["share"]), cell(values["score"])]
            for label, model in _models(result, READINGS[0]) for kind, values in model["sinks"].items()]
    return ["", "### Attention sinks on the first token (mean over inputs, 95 % CI)", ""] + _table(header, rows)


def markdown(result: dict) -> str:
    lines = [f"## Study: {result['examples']} inputs, {len(result['models'])} models", ""]
    lines += [measures.markdown("attention to answer", "attention noise", *(f"{r} reading" for r in READINGS),
                                "retrieval accuracy", "QA exact match", "sink score", "sink share",
                                "attention-logit outliers", "hidden-state outliers", "95 % CI")]
    for part in (table3, by_length, by_layer, table5, sinks):
        lines += part(result)
    return "\n".join(lines) + "\n"
