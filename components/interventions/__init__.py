"""The Interventions tab's pieces: the backend calls its views and tools share (``calls``), the JSON tools
that are also MCP tools (``tools``), the figures' common parts (``plots``), and one module per intervention
section (``lambdas``, ``heads``, ``patching``, ``logit_lens``, ``quantization``), each its view and its
controls. The tab itself: ``components.interventions_tab``."""
