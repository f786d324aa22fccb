"""Loading DiffLlama, Llama and Persimmon checkpoints through transformers' own classes."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import urlparse

import torch
import transformers
from huggingface_hub import HfApi, constants as hub_constants
from huggingface_hub.errors import GatedRepoError
from safetensors import SafetensorError
from transformers import AutoConfig, AutoTokenizer

from . import limits, tasks
from .interventions.quantize import quantization_config, split_source
from .records import ModelInfo
from .trace import ARCHITECTURES, ATTENTION_IMPLEMENTATION, Architecture, Trace, architecture_of, run_trace

# (config.model_type, task) -> transformers class name. Persimmon has no question-answering head.
HEADS = {"generation": "ForCausalLM", "classification": "ForSequenceClassification",
         "qa": "ForQuestionAnswering", "tagging": "ForTokenClassification"}
ARCH_PREFIX = {name: architecture.class_prefix for name, architecture in ARCHITECTURES.items()}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
HUB_PROBE_SECONDS = 1.0  # a hub that does not accept a connection this fast counts as unreachable
HUB_PROBE_REUSE_SECONDS = 30.0  # one probe answers every hub load for this long
log = logging.getLogger("diffllama_lens")


class LoadError(ValueError):
    """A checkpoint that cannot be opened, with the reason and what to do instead."""


HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*(?:@[\w./-]+)?$")  # [owner/]name[@revision]


def parse_hub_id(text: str) -> tuple[str, str | None] | None:
    """``(repo id, revision)`` when ``text`` is written like a hub id (by its spelling alone, never by
    looking at the disk), else None."""
    if not HUB_ID.match(text) or ".." in text:
        return None
    repo, _, revision = text.partition("@")
    return repo, revision or None


def check_hub() -> None:
    """Fail in well under a second when the hub cannot be used: offline mode, or no connection to
    its endpoint (one short probe, reused for a while), instead of transformers' retries."""
    if hub_constants.is_offline_mode():
        raise LoadError("this server runs offline, so hub ids cannot be loaded; use a bundled model")
    with _PROBE_LOCK:
        if time.monotonic() - _PROBE["at"] > HUB_PROBE_REUSE_SECONDS:
            _PROBE.update(at=time.monotonic(), ok=_connects(hub_constants.ENDPOINT, HUB_PROBE_SECONDS))
        reachable = _PROBE["ok"]
    if not reachable:
        raise LoadError("the model hub cannot be reached from this server; use a bundled model")


_PROBE, _PROBE_LOCK = {"at": float("-inf"), "ok": False}, threading.Lock()


def _connects(url: str, timeout: float) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds (name lookup
    included: it runs in a thread, since the resolver has no timeout of its own)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    outcome = []

    def connect():
        try:
            socket.create_connection((parsed.hostname, port), timeout=timeout).close()
            outcome.append(True)
        except OSError:
            outcome.append(False)

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(outcome and outcome[0])


def estimated_bytes(config, dtype: torch.dtype) -> float:
    """Parameter bytes a config describes once loaded in ``dtype`` (embeddings, attention and MLP
    weights; norms and biases are negligible), known before any weights are read."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    shape = ARCHITECTURES[config.model_type].attention_shape(config)
    attention = 2 * hidden * (shape.heads + shape.kv_heads) * shape.head_dim  # q, o; k, v
    mlp = 3 * hidden * config.intermediate_size  # gate, up, down (Persimmon has two: an upper bound)
    embeddings = config.vocab_size * hidden * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    return (embeddings + layers * (attention + mlp)) * torch.empty(0, dtype=dtype).element_size()


def weight_files_bytes(location: str, revision: str | None, local: bool) -> int:
    """Bytes of a checkpoint's weight files, from the directory listing or the hub's file metadata."""
    if local:
        return sum(f.stat().st_size for f in Path(location).iterdir() if f.name.endswith(WEIGHT_SUFFIXES))
    info = HfApi().model_info(location, revision=revision, files_metadata=True, timeout=10)
    return sum(f.size or 0 for f in info.siblings or [] if f.rfilename.endswith(WEIGHT_SUFFIXES))


@dataclass
class LensModel:
    """A loaded checkpoint: the transformers model and tokenizer plus the app's runners."""

    source: str  # how messages name it: the bundled name, directory name or hub id (never a server path)
    arch: str  # "diffllama" | "llama" | "persimmon"
    task: str  # "generation" | "classification" | "qa" | "tagging"
    config: transformers.PretrainedConfig
    tokenizer: transformers.PreTrainedTokenizerBase
    model: torch.nn.Module

    @property
    def device(self) -> torch.device:
        return self.model.device

    @cached_property
    def architecture(self) -> Architecture:
        """What the trace reads differently for this architecture, and the model's attention shape."""
        return architecture_of(self.config)

    @property
    def info(self) -> ModelInfo:
        lambdas = self.architecture.lambdas(self.model)
        return ModelInfo(
            source=self.source,
            arch=self.arch,
            task=self.task,
            num_parameters=sum(p.numel() for p in self.model.parameters()),
            num_layers=self.config.num_hidden_layers,
            num_heads=self.architecture.shape.map_heads,
            has_lambda=lambdas is not None,
            device=str(self.device),
            dtype=str(self.model.dtype).removeprefix("torch."),
            labels=[self.config.id2label[i] for i in sorted(self.config.id2label)] if self.task in ("classification", "tagging") else [],
        )

    def trace(self, text: str, text_pair: str | None = None, what: str | None = None) -> Trace:
        """One forward pass over ``text`` (and ``text_pair``), kept as a lazily evaluated ``Trace``; an
        input longer than the model reads in one pass is refused first (``check_input``; ``what``
        names it in the message, by default "text" or "text + text pair")."""
        self.check_input(what or ("text" if text_pair is None else "text + text pair"), text, text_pair)
        return run_trace(self.model, self.tokenizer, self.arch, text, text_pair)

    check_input = tasks.check_input
    check_task_input = tasks.check_task_input
    trace_continuation = tasks.trace_continuation

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


def _read_config(location: str, revision: str | None, name: str):
    """The checkpoint's config. Messages name the checkpoint as ``name`` and quote no library error
    (those hold server paths and URLs); the details go to the log."""
    local = Path(location).expanduser()
    if local.is_dir():
        config_file = local / "config.json"
        if not config_file.is_file():
            raise LoadError(f"{name}: the directory has no config.json, so it is not a transformers checkpoint")
        try:
            raw = json.loads(config_file.read_text())
        except (ValueError, UnicodeDecodeError):
            raise LoadError(f"{name}: config.json is not valid JSON") from None
        if raw.get("auto_map") or raw.get("trust_remote_code"):
            raise LoadError(f"{name}: the config asks for remote code (auto_map); DiffLlama Lens never runs code "
                            "from a checkpoint. Use a checkpoint of a built-in architecture.")
    elif parse_hub_id(location) is None:
        raise LoadError(f"{name}: no such directory (give a checkpoint directory or a hub id like 'owner/name')")
    else:
        check_hub()
    try:
        config = AutoConfig.from_pretrained(location, revision=revision, trust_remote_code=False)
    except ValueError as error:  # unknown model_type, or a hub config that needs remote code
        log.info("config of %s refused: %s", name, error)
        raise LoadError(f"{name}: its config names an architecture transformers does not know; "
                        f"DiffLlama Lens loads {', '.join(ARCH_PREFIX)}") from None
    except OSError as error:  # not found locally and not reachable on the hub
        log.info("config of %s not read: %s", name, error)
        if isinstance(error, GatedRepoError) or isinstance(error.__cause__, GatedRepoError):  # e.g. meta-llama/*
            raise LoadError(f"{name}: the model is gated on the hub; accept its terms on its hub page and start this "
                            "server with that account's token (HF_TOKEN), or use another model") from None
        raise LoadError(f"{name}: no config could be read (no such model on the hub, or the hub did not answer)") from None
    if getattr(config, "auto_map", None):
        raise LoadError(f"{name}: the config asks for remote code (auto_map); DiffLlama Lens never runs code from a checkpoint.")
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


def _check_size(location: str, revision: str | None, name: str, config, dtype: torch.dtype, max_bytes: float) -> None:
    """Refuse a checkpoint above ``max_bytes`` from its config and its files' sizes, before any weights are read."""
    local = Path(location).is_dir()
    try:
        sizes = {"parameters": estimated_bytes(config, dtype), "weight files": weight_files_bytes(location, revision, local)}
    except (OSError, AttributeError, TypeError, ValueError) as error:  # hub metadata unavailable, odd config fields
        log.info("size of %s not known: %s", name, error)
        raise LoadError(f"{name}: its size could not be checked before loading, so it is not loaded") from None
    for what, size in sizes.items():
        if size > max_bytes:
            raise LoadError(f"{name}: its {what} take about {size / 1e9:.1f} GB, above this server's limit of "
                            f"{max_bytes / 1e9:.1f} GB per model; use a smaller checkpoint")


def load(source: str | os.PathLike, task: str | None = None, device: str = "auto", dtype="auto", *,
         name: str | None = None, max_bytes: float | None = None) -> LensModel:
    """Load a DiffLlama / Llama / Persimmon checkpoint (local directory, or hub id ``owner/name[@revision]``) for ``task``.

    The architecture comes from ``config.model_type``; the task from ``config.architectures`` unless
    given. Remote code is refused; weights load through transformers (safetensors, or torch's
    weights-only loader for pickles). ``device="auto"`` picks CUDA when present, ``dtype="auto"``
    bfloat16 on CUDA and float32 on CPU; on CUDA accelerate's ``device_map="auto"`` spreads a model
    that does not fit one device (a device with an index, such as ``"cuda:1"``, holds the whole model).
    ``name`` is how messages (and ``LensModel.source``) call the checkpoint; ``max_bytes`` refuses
    larger ones before their weights are read. A ``#scheme`` suffix (``path#int8``) loads the model
    quantized through transformers' ``TorchAoConfig`` (``diffllama.interventions.quantize``).
    """
    source = str(source)
    name = name or source
    try:
        source, scheme = split_source(source)
        quantized = {"quantization_config": quantization_config(scheme)} if scheme else {}
    except ValueError as error:
        raise LoadError(f"{name}: {error}") from None
    location, revision = (source, None) if Path(source).expanduser().is_dir() else (parse_hub_id(source) or (source, None))
    config = _read_config(location, revision, name)
    arch = config.model_type
    if arch not in ARCH_PREFIX:
        raise LoadError(f"{name}: architecture {arch!r} is not supported; DiffLlama Lens loads {', '.join(ARCH_PREFIX)}")
    task = _task_of(config, arch, task)
    model_class = getattr(transformers, ARCH_PREFIX[arch] + HEADS[task])
    # a trace keeps hidden_states[-1] as the last decoder layer returned it, not after the final norm
    # (transformers' default): the layer outputs Table 5 summarises, none run again; nothing reads the normed one
    config.tie_last_hidden_states = False
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    if max_bytes is not None:
        _check_size(location, revision, name, config, torch_dtype, max_bytes)
    # "cuda" spreads a large model over the visible GPUs; "cuda:1" (one process per GPU) keeps it on that one
    placement = {"device_map": "auto"} if target.type == "cuda" and target.index is None else {}
    try:
        model, report = model_class.from_pretrained(
            location, revision=revision, config=config, dtype=torch_dtype, trust_remote_code=False,
            attn_implementation=ATTENTION_IMPLEMENTATION, output_loading_info=True, **placement, **quantized,
        )
        tokenizer = AutoTokenizer.from_pretrained(location, revision=revision, trust_remote_code=False)
    except SafetensorError:
        raise LoadError(f"{name}: the weights file is corrupted or truncated") from None
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        if "ignore_mismatched_sizes" in str(error):
            raise LoadError(f"{name}: the weights do not match the config: some tensors have other shapes "
                            "than config.json describes") from None
        log.info("weights of %s not loaded: %s", name, error)
        raise LoadError(f"{name}: the weights or the tokenizer could not be read ({type(error).__name__}); "
                        "is it a complete transformers checkpoint?") from None
    if report["missing_keys"] or report["mismatched_keys"]:
        # a randomly initialised part would make every map and prediction meaningless
        missing = sorted(report["missing_keys"]) + sorted(str(k[0]) if isinstance(k, tuple) else str(k) for k in report["mismatched_keys"])
        raise LoadError(f"{name}: the weights do not match the config for {task}: {len(missing)} tensors missing or "
                        f"mis-shaped (e.g. {', '.join(missing[:3])}). Is this a {task} checkpoint of this architecture?")
    if not placement:
        model.to(target)
    model.eval()
    limits.watch(model)
    if not tokenizer.is_fast:
        raise LoadError(f"{name}: a fast tokenizer (tokenizer.json) is needed for character offsets")
    return LensModel(source=name, arch=arch, task=task, config=model.config, tokenizer=tokenizer, model=model)
