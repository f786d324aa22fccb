"""DiffLlama Lens UI: one module per tab, shared slots, attention panel and figure builders."""
