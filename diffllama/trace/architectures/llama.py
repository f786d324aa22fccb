"""Llama: one softmax map per query head, GQA, output projection ``o_proj``."""

from .base import Architecture


class Llama(Architecture):
    name = "llama"
    class_prefix = "Llama"
