"""One example of each runner and of the analysis on the bundled DiffLlama / Llama pair.

    python benchmarks/analysis_examples.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diffllama  # noqa: E402
from diffllama import analysis  # noqa: E402
M = str(Path(__file__).resolve().parents[1] / "assets" / "models") + "/"
lm = diffllama.load(M + "diffllama-lm")
s = lm.generate("Anna lived in Paris. One morning", max_new_tokens=24, greedy=True); pieces = list(s)
print("generate pieces:", pieces[:6], "... text:", repr(s.result.text), "tokens:", len(s.result.token_ids), "trace N:", s.result.trace.seq_len)
c = diffllama.load(M + "diffllama-cls").classify("The hotel was not bad. We were in Oslo.")
print("classify:", [(l.label, round(l.probability, 4)) for l in c.labels], "pooled:", c.pooled_index, repr(c.pooled_token))
q = diffllama.load(M + "llama-qa").answer("What is the magic number of Lyon?", "The magic number of Paris is 4341. The magic number of Lyon is 6087. A bus passed by slowly.", top_k=3)
print("answer:", [(a.text, a.start, a.end, round(a.score, 4)) for a in q.spans], "windows:", q.num_windows)
t = diffllama.load(M + "diffllama-tag").tag("On 12 May 2021 Bob met Clara at Helix Labs in Oslo.")
print("tag:", [(e.label, e.text, e.start, e.end, round(e.score, 3)) for e in t.entities])
text = "The magic number of Paris is 4341. A bus passed by slowly. The magic number of Lyon is 6087. What is the magic number of Lyon?"
for name in ("diffllama-lm", "llama-lm"):
    m = diffllama.load(M + name); tr = m.trace(text)
    st = analysis.head_stats(tr)
    a = analysis.token_spans(tr, text.index("6087"), text.index("6087") + 4)
    ctx = (1, analysis.token_spans(tr, text.index("What") - 2, text.index("What"))[1])
    al = analysis.span_allocation(tr, tr.seq_len - 1, a, ctx)
    o = analysis.activation_outliers(tr)
    print(name, "entropy/layer", st.entropy.mean(1).round(3).tolist(), "top-5 mass", st.top_k_mass.mean(1).round(3).tolist(),
          "sink", st.sink_mass.mean(1).round(3).tolist(), "negative", st.negative_mass.mean(1).round(3).tolist())
    print(name, "answer/noise (net)", *(round(v, 4) for v in al.means()), "logits", {k: round(v, 2) for k, v in o.attention_logits.items()}, "hidden", {k: round(v, 2) for k, v in o.hidden_states.items()})
    if tr.lambdas:
        print(name, "λ", [round(x, 3) for x in tr.lambdas], "λ_init", [round(x, 3) for x in tr.lambda_inits])
        ab = analysis.lambda_ablation(m, tr, 0.0)
        print(name, "ablation λ=0: changed", sum(ab.changed), "of", len(ab.changed), "mean KL", round(sum(ab.kl) / len(ab.kl), 4))
al2 = analysis.align_tokens(diffllama.load(M + "diffllama-lm").trace("Zürich 4821"), diffllama.load(M + "llama-lm").trace("Zürich 4821"))
print("align:", al2.a_to_b)
