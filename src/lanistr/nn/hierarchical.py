"""Long documents: a hierarchical classifier and sliding-window token tagging.

Hierarchical: a document is cut into overlapping segments (``lanistr.data.segments``); the
encoder turns each segment into a vector (its first token, or the pooler); a small
document-level transformer runs over the segment vectors (+ learned segment positions), and
their masked mean is classified.
"""

from __future__ import annotations

import torch
from torch import nn

from lanistr.config import AttentionConfig
from lanistr.nn.heads import ClassificationHead
from lanistr.nn.layers import EncoderLayer, TokenLayout
from lanistr.nn.models import _WithEncoder, register_architecture
from lanistr.nn.outputs import ModelOutput


@register_architecture
class LanistrForDocumentClassification(_WithEncoder):
    head_prefixes = ("classifier.", "segment_position.", "doc_layers.", "model.pooler.")

    def __init__(self, config):
        super().__init__(config)
        h = config.hierarchical
        doc_config = config.replace(attention=AttentionConfig("full"))
        self.segment_position = nn.Embedding(h.max_segments, config.hidden_size)
        self.doc_layers = nn.ModuleList(EncoderLayer(doc_config, i) for i in range(h.doc_layers))
        self.classifier = ClassificationHead(config, max(config.num_labels, 1))
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, *,
                segment_mask=None, output_attentions=False,
                output_hidden_states=False) -> ModelOutput:
        """``input_ids``: (B, S, T) segments; ``segment_mask``: (B, S), 1 on real segments
        (default: segments with any token)."""
        b, s, t = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if segment_mask is None:
            segment_mask = attention_mask.any(-1)
        segment_mask = segment_mask.bool()
        real = segment_mask.reshape(-1)
        flat = lambda x: None if x is None else x.reshape(b * s, t)[real]  # noqa: E731
        enc = self.encode(flat(input_ids), flat(attention_mask), flat(token_type_ids),
                          output_attentions=output_attentions,
                          output_hidden_states=output_hidden_states)
        vectors = enc.pooled.new_zeros(b * s, enc.pooled.shape[-1])
        vectors[real] = enc.pooled
        vectors = vectors.view(b, s, -1) + self.segment_position(
            torch.arange(s, device=input_ids.device))  # (B, S, D)
        layout = TokenLayout.from_mask(segment_mask, b, s)
        x = layout.unpad(vectors)
        for layer in self.doc_layers:
            x, _ = layer(x, layout)
        h = layout.pad(x)  # (B, S, D)
        m = segment_mask.to(h.dtype)[..., None]
        doc = (h * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, D)
        return ModelOutput(last_hidden_state=h, hidden_states=enc.hidden_states,
                           attentions=enc.attentions, pooled=doc, logits=self.classifier(doc))
