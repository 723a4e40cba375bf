"""ONNX export of BERT-layout lanistr checkpoints and an onnxruntime runner for them.

An export directory holds ``model.onnx`` (fp32; ``model.int8.onnx`` too with dynamic int8
quantization), the checkpoint's lanistr ``config.json`` (architecture, labels), its tokenizer,
its ``finetune.json`` when it has one, and ``export.json`` (the files, inputs and outputs).
The graph takes ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64, ``(batch,
sequence)``, both axes dynamic; a model without segment embeddings has no ``token_type_ids``)
and returns ``logits`` (classifier, tagger, MLM; plus ``nsp_logits`` for pretraining) or
``last_hidden_state`` (the bare encoder).

The graph is traced by PyTorch's TorchScript-based exporter (``dynamo=False``) on a padded
batch, so it contains the model's own real-token path (gather the real tokens, run the layers
on them, scatter back): a batch without padding takes the same path with every token real.
The export is checked against PyTorch on two batch shapes before it is written.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lanistr import __version__
from lanistr.checkpoint import CONFIG_NAME
from lanistr.config import LanistrConfig
from lanistr.errors import LanistrError
from lanistr.export.base import (
    copy_tokenizer,
    load_checkpoint,
    model_max_length,
    output_directory,
    read_exportable_config,
    refuse,
)
from lanistr.io import write_json, write_text
from lanistr.nn.outputs import ModelOutput

TARGET = "ONNX"
MODEL_FILE = "model.onnx"
QUANTIZED_FILES = {"int8": "model.int8.onnx"}
EXPORT_FILE = "export.json"
#: ONNX opset: 17 has LayerNormalization as one op, and every onnxruntime >= 1.14 runs it.
OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TOLERANCE = 1e-4  # fp32 onnxruntime vs PyTorch, checked at export time


def graph_outputs(config: LanistrConfig) -> tuple[str, ...]:
    """Names of the graph's outputs (fields of :class:`~lanistr.nn.outputs.ModelOutput`)."""
    return {"LanistrModel": ("last_hidden_state",),
            "LanistrForPreTraining": ("logits", "nsp_logits")}.get(config.architecture,
                                                                   ("logits",))


def check_exportable(config: LanistrConfig, src: Path) -> None:
    """Refuse what the ONNX export does not cover, naming the field."""
    if config.attention.backend != "full":
        raise refuse(src, TARGET, "attention.backend", config.attention.backend,
                     "only the full attention backend is exported and tested")


class _Graph(nn.Module):
    """The model as a function of the three int64 inputs, returning plain tensors."""

    def __init__(self, model: nn.Module, outputs: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.outputs = outputs

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids, attention_mask, token_type_ids)
        return tuple(getattr(out, name) for name in self.outputs)


def example_batch(config: LanistrConfig, batch: int, length: int,
                  seed: int = 0) -> dict[str, torch.Tensor]:
    """A padded batch of ``batch`` rows (row ``i`` has ``length - i`` real tokens, at least 2)."""
    g = torch.Generator().manual_seed(seed)
    length = min(length, config.max_len)
    input_ids = torch.randint(0, config.vocab_size, (batch, length), generator=g)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(batch):
        attention_mask[row, max(2, length - row):] = 0
    token_type_ids = torch.zeros(batch, length, dtype=torch.long)
    if config.type_vocab_size > 1:
        token_type_ids[:, length // 2:] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "token_type_ids": token_type_ids * attention_mask}


def _trace(model: nn.Module, config: LanistrConfig, path: Path) -> None:
    outputs = graph_outputs(config)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    for name in outputs:
        per_token = name != "nsp_logits" and config.architecture != \
            "LanistrForSequenceClassification"
        axes[name] = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}
    example = example_batch(config, 2, 8)
    with warnings.catch_warnings():  # tracer notes on Python ints taken from shapes
        warnings.simplefilter("ignore")
        # eval() on the wrapper: the exporter restores the wrapper's mode afterwards, and a
        # fresh module is in training mode, which would switch the model's dropout on.
        torch.onnx.export(_Graph(model, outputs).eval(), tuple(example[n] for n in INPUTS),
                          str(path),
                          input_names=list(INPUTS), output_names=list(outputs),
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False,
                          do_constant_folding=True)


def _verify(model: nn.Module, config: LanistrConfig, path: Path) -> float:
    """Largest |onnxruntime - PyTorch| over two padded batches of other shapes than the
    traced one; raises if it exceeds :data:`TOLERANCE` (an export that is not the model)."""
    runner = OnnxRunner(path, config)
    worst = 0.0
    for batch, length in ((3, 11), (1, 5)):
        inputs = example_batch(config, batch, length, seed=batch)
        with torch.no_grad():
            want = model(**inputs)
        got = runner(**inputs)
        for name in graph_outputs(config):
            worst = max(worst, (getattr(got, name) - getattr(want, name)).abs().max().item())
    if not worst <= TOLERANCE:
        raise LanistrError(f"{path}: onnxruntime differs from PyTorch by {worst:.2e} "
                           f"(> {TOLERANCE}); the export is not written")
    return worst


def gemm_as_matmul(model):
    """Rewrite every ``Gemm`` whose weight is an initializer as ``MatMul`` (+ ``Add`` of the
    bias), in place. The layers run on flat ``(N, D)`` tokens, so every ``nn.Linear`` is a
    ``Gemm`` in the graph, and onnxruntime's dynamic quantization leaves ``Gemm`` in fp32."""
    from onnx import helper, numpy_helper

    weights = {init.name: init for init in model.graph.initializer}
    nodes, added = [], {}
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in weights or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        name = node.input[1] + ("_t" if attrs.get("transB", 0) else "")
        if name not in weights and name not in added:
            w = numpy_helper.to_array(weights[node.input[1]])  # (out, in) with transB
            added[name] = numpy_helper.from_array(
                np.ascontiguousarray(w.T if attrs.get("transB", 0) else w), name)
        product = node.output[0] + ("_matmul" if len(node.input) > 2 else "")
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [product],
                                      name=node.name + "_matmul"))
        if len(node.input) > 2:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]],
                                          name=node.name + "_bias"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(added.values())
    used = {name for node in model.graph.node for name in node.input}
    kept = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model


def quantize_int8(fp32: Path, int8: Path) -> None:
    """Dynamic int8 quantization with onnxruntime's ``quantize_dynamic``: the weights of every
    linear layer are stored as int8 (per output channel), activations are quantized at run
    time."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    matmul = int8.with_name(int8.stem + ".matmul.onnx")
    onnx.save(gemm_as_matmul(onnx.load(str(fp32))), str(matmul))
    previous = logging.root.manager.disable
    # Its root-logger warnings (no pre-processing; no type for the NonZero of the real-token
    # index, which it rightly leaves alone) are not the user's to act on.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(matmul), str(int8), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.disable(previous)
        matmul.unlink(missing_ok=True)


def export_onnx(src: str | Path, out: str | Path, *, quantize: str | None = None,
                overwrite: bool = False) -> dict:
    """Export checkpoint ``src`` to the ONNX directory ``out``; returns ``export.json``'s
    content (with ``max_abs_diff``, the verified fp32 deviation from PyTorch)."""
    _import_onnxruntime()
    src = Path(src)
    if quantize is not None and quantize not in QUANTIZED_FILES:
        raise LanistrError(f"--quantize {quantize}: choose from {', '.join(QUANTIZED_FILES)}")
    config = read_exportable_config(src, TARGET)
    check_exportable(config, src)
    model = load_checkpoint(src)
    with output_directory(src, out, overwrite) as tmp:
        _trace(model, config, tmp / MODEL_FILE)
        worst = _verify(model, config, tmp / MODEL_FILE)
        files = {"fp32": MODEL_FILE}
        if quantize is not None:
            quantize_int8(tmp / MODEL_FILE, tmp / QUANTIZED_FILES[quantize])
            files[quantize] = QUANTIZED_FILES[quantize]
        write_text(tmp / CONFIG_NAME, config.to_json())  # architecture, labels: for the runner
        from lanistr.tasks.run_config import META_FILE

        if (src / META_FILE).is_file():
            (tmp / META_FILE).write_bytes((src / META_FILE).read_bytes())
        copy_tokenizer(src, tmp, model_max_length(src, config))
        inputs = [i.name for i in OnnxRunner(tmp / MODEL_FILE).session.get_inputs()]
        info = {"format": "onnx", "opset": OPSET, "files": files, "inputs": inputs,
                "outputs": list(graph_outputs(config)), "architecture": config.architecture,
                "labels": list(config.labels), "max_abs_diff": worst,
                "lanistr": __version__, "torch": torch.__version__}
        write_json(tmp / EXPORT_FILE, info)
    return info


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise LanistrError("ONNX export and the onnx runtime need onnx and onnxruntime: "
                           'pip install "lanistr[onnx]"') from None
    return onnxruntime


class OnnxRunner:
    """An exported graph run by onnxruntime on CPU, called like a lanistr model.

    ``runner(input_ids, attention_mask, token_type_ids)`` takes torch tensors and returns a
    :class:`~lanistr.nn.outputs.ModelOutput` holding the graph's outputs as torch tensors
    (``logits``, or ``last_hidden_state`` for an encoder). ``config`` is the exported lanistr
    config (labels, architecture) when the runner was made with :meth:`from_export`.
    """

    def __init__(self, path: str | Path, config: LanistrConfig | None = None, *,
                 threads: int | None = None):
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.config = config

    @classmethod
    def from_export(cls, path: str | Path, *, threads: int | None = None) -> OnnxRunner:
        """Open an export directory (its ``model.onnx``) or one ``.onnx`` file in it (e.g.
        ``model.int8.onnx``), with the directory's lanistr ``config.json``."""
        from lanistr.checkpoint import read_config

        path = Path(path)
        directory, file = (path.parent, path) if path.suffix == ".onnx" else (path, path / MODEL_FILE)
        if not file.is_file():
            raise LanistrError(f"{path}: no {file.name}; export the model first with "
                               f"`lanistr export --format onnx CHECKPOINT OUT` and use OUT")
        return cls(file, read_config(directory), threads=threads)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None) -> ModelOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        given = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "token_type_ids": token_type_ids}
        feed = {name: np.ascontiguousarray(given[name].detach().cpu().numpy(), dtype=np.int64)
                for name in self.input_names}
        values = dict(zip(self.output_names, self.session.run(self.output_names, feed)))
        tensors = {name: torch.from_numpy(value) for name, value in values.items()}
        return ModelOutput(last_hidden_state=tensors.pop("last_hidden_state", None), **tensors)
