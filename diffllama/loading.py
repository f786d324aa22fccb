"""Loading DiffLlama, Llama and Persimmon checkpoints through transformers' own classes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError
from transformers import AutoConfig, AutoTokenizer

from . import tasks
from .records import ModelInfo
from .tracing import ATTENTION_IMPLEMENTATION, Trace, diff_lambdas, run_trace

# (config.model_type, task) -> transformers class name. Persimmon has no question-answering head.
HEADS = {"generation": "ForCausalLM", "classification": "ForSequenceClassification",
         "qa": "ForQuestionAnswering", "tagging": "ForTokenClassification"}
ARCH_PREFIX = {"diffllama": "DiffLlama", "llama": "Llama", "persimmon": "Persimmon"}


ALLOWED_DIRS_ENV = "DIFFLLAMA_LENS_MODEL_DIRS"  # os.pathsep-separated; when set, local loading stays inside them


class LoadError(ValueError):
    """A checkpoint that cannot be opened, with the reason and what to do instead."""


def allowed_dirs() -> list[Path] | None:
    """Directories local checkpoints may come from (``$DIFFLLAMA_LENS_MODEL_DIRS``), or None for any."""
    value = os.environ.get(ALLOWED_DIRS_ENV)
    return [Path(p).expanduser().resolve() for p in value.split(os.pathsep) if p] if value else None


def _check_allowed(source: str) -> None:
    roots = allowed_dirs()
    if roots is None or _looks_like_hub_id(source):
        return
    resolved = Path(source).expanduser().resolve()
    if not any(resolved == root or root in resolved.parents for root in roots):
        # the same message whether or not the path exists, so the API cannot probe the file system
        raise LoadError(f"{source}: local checkpoints can only be loaded from the configured model directories")


def _looks_like_hub_id(source: str) -> bool:
    """'owner/name' (or 'name'), which transformers resolves on the hub, rather than a path."""
    parts = source.split("/")
    return len(parts) <= 2 and not source.startswith((".", "/", "~")) and all(parts) and not Path(source).exists()


@dataclass
class LensModel:
    """A loaded checkpoint: the transformers model and tokenizer plus the app's runners."""

    source: str
    arch: str  # "diffllama" | "llama" | "persimmon"
    task: str  # "generation" | "classification" | "qa" | "tagging"
    config: transformers.PretrainedConfig
    tokenizer: transformers.PreTrainedTokenizerBase
    model: torch.nn.Module

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def info(self) -> ModelInfo:
        lambdas = diff_lambdas(self.model)
        return ModelInfo(
            source=self.source,
            arch=self.arch,
            task=self.task,
            num_parameters=sum(p.numel() for p in self.model.parameters()),
            num_layers=self.config.num_hidden_layers,
            num_heads=self.config.num_attention_heads // (2 if lambdas else 1),
            has_lambda=lambdas is not None,
            device=str(self.device),
            dtype=str(self.model.dtype).removeprefix("torch."),
            labels=[self.config.id2label[i] for i in sorted(self.config.id2label)] if self.task in ("classification", "tagging") else [],
        )

    def trace(self, text: str, text_pair: str | None = None) -> Trace:
        """One forward pass over ``text`` (and ``text_pair``), kept as a lazily evaluated ``Trace``."""
        return run_trace(self.model, self.tokenizer, self.arch, text, text_pair)

    generate = tasks.generate
    classify = tasks.classify
    answer = tasks.answer
    tag = tasks.tag


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def _read_config(source: str):
    _check_allowed(source)
    local = Path(source).expanduser()
    if local.is_dir():
        config_file = local / "config.json"
        if not config_file.is_file():
            raise LoadError(f"{source}: the directory has no config.json, so it is not a transformers checkpoint")
        raw = json.loads(config_file.read_text())
        if raw.get("auto_map") or raw.get("trust_remote_code"):
            raise LoadError(f"{source}: the config asks for remote code (auto_map); DiffLlama Lens never runs code "
                            "from a checkpoint. Use a checkpoint of a built-in architecture.")
    elif not _looks_like_hub_id(source):
        raise LoadError(f"{source}: no such directory (give a checkpoint directory or a hub id like 'owner/name')")
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except ValueError as error:  # unknown model_type, or a hub config that needs remote code
        raise LoadError(f"{source}: {error}") from None
    except OSError as error:  # not found locally and not reachable on the hub
        raise LoadError(f"{source}: could not load a config ({error})") from None
    if getattr(config, "auto_map", None):
        raise LoadError(f"{source}: the config asks for remote code (auto_map); DiffLlama Lens never runs code from a checkpoint.")
    return config


def _task_of(config, arch: str, task: str | None) -> str:
    if task is None:
        for name in config.architectures or []:
            task = next((t for t, suffix in HEADS.items() if name.endswith(suffix)), None)
            if task:
                break
        task = task or "generation"
    if task not in HEADS:
        raise LoadError(f"unknown task {task!r}; choose one of {', '.join(HEADS)}")
    if not hasattr(transformers, ARCH_PREFIX[arch] + HEADS[task]):
        available = [t for t, s in HEADS.items() if hasattr(transformers, ARCH_PREFIX[arch] + s)]
        raise LoadError(f"{arch} has no {task} head in transformers; it supports {', '.join(available)}")
    return task


def load(source: str | os.PathLike, task: str | None = None, device: str = "auto", dtype="auto") -> LensModel:
    """Load a DiffLlama / Llama / Persimmon checkpoint (local directory or hub id) for ``task``.

    The architecture comes from ``config.model_type``; the task from ``config.architectures`` unless
    given. Remote code is refused; weights load through transformers (safetensors, or torch's
    weights-only loader for pickles). ``device="auto"`` picks CUDA when present, ``dtype="auto"``
    bfloat16 on CUDA and float32 on CPU; on CUDA accelerate's ``device_map="auto"`` spreads a model
    that does not fit one device (a device with an index, such as ``"cuda:1"``, holds the whole model).
    """
    source = str(source)
    config = _read_config(source)
    arch = config.model_type
    if arch not in ARCH_PREFIX:
        raise LoadError(f"{source}: architecture {arch!r} is not supported; DiffLlama Lens loads {', '.join(ARCH_PREFIX)}")
    task = _task_of(config, arch, task)
    model_class = getattr(transformers, ARCH_PREFIX[arch] + HEADS[task])
    target = resolve_device(device)
    # "cuda" spreads a large model over the visible GPUs; "cuda:1" (one process per GPU) keeps it on that one
    placement = {"device_map": "auto"} if target.type == "cuda" and target.index is None else {}
    try:
        model, report = model_class.from_pretrained(
            source, config=config, dtype=resolve_dtype(dtype, target), trust_remote_code=False,
            attn_implementation=ATTENTION_IMPLEMENTATION, output_loading_info=True, **placement,
        )
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except SafetensorError as error:
        raise LoadError(f"{source}: the weights file is corrupted or truncated ({error})") from None
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        if "ignore_mismatched_sizes" in str(error):
            raise LoadError(f"{source}: the weights do not match the config: some tensors have other shapes "
                            "than config.json describes") from None
        raise LoadError(f"{source}: the checkpoint could not be loaded: {error}") from None
    if report["missing_keys"] or report["mismatched_keys"]:
        # a randomly initialised part would make every map and prediction meaningless
        missing = sorted(report["missing_keys"]) + sorted(str(k[0]) if isinstance(k, tuple) else str(k) for k in report["mismatched_keys"])
        raise LoadError(f"{source}: the weights do not match the config for {task}: {len(missing)} tensors missing or "
                        f"mis-shaped (e.g. {', '.join(missing[:3])}). Is this a {task} checkpoint of this architecture?")
    if not placement:
        model.to(target)
    model.eval()
    if not tokenizer.is_fast:
        raise LoadError(f"{source}: a fast tokenizer (tokenizer.json) is needed for character offsets")
    return LensModel(source=source, arch=arch, task=task, config=model.config, tokenizer=tokenizer, model=model)
