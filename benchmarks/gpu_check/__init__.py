"""The GPU paths the README promises, exercised at the real pair's shape with nothing downloaded:
random-weight checkpoints with the exact configs of kajuma/DiffLlama-0.3B-handcut and
meta-llama/Llama-3.2-1B (hidden 2048, 16 layers, 32 query / 8 KV heads, head_dim 64, llama3 RoPE
scaling, tied embeddings, vocabulary 128256, MLP 8192) built locally, loaded through
``diffllama.load`` with the app's defaults (on CUDA: bfloat16, accelerate's ``device_map="auto"``).

    python -m benchmarks.gpu_check                    # the full run on CUDA (sized for ≈ 10 minutes on one GPU)
    python -m benchmarks.gpu_check --scale tiny --device cpu   # the same checks in seconds (the test suite's)

Parts (``--parts``; each prints its rows as they come, then a Markdown table):

- ``exact``: every map kind (diff, a1, a2; softmax) for several layers and heads against transformers'
  eager attention of the same checkpoint in float32 on the same device; λ; contributions summing to
  the heads' outputs (see ``exactness`` for the tolerances and why)
- ``forward``: trace vs plain forward at 2K, 8K and 32K tokens (time, peak GPU memory)
- ``views``: every analysis view's time at 2K and 8K tokens, from a cold cache
- ``streaming``: the app's streaming generation vs transformers' ``generate`` (``bench.part_streaming``)
- ``study``: a study of 50 inputs over both models, and under ``accelerate launch --num_processes 2``
  where the machine has two GPUs
- ``zerogpu``: the handlers the app wraps in ``spaces.GPU``, run through a stand-in ``spaces`` module
  that refuses outputs ZeroGPU could not hand back (tensors on a GPU, anything unpicklable)
- ``quantized``: a quantized model slot, once ``diffllama.interventions.quantize`` exists

Exit status 1 when any check fails. ``--out FILE`` writes every row as JSON.
"""
