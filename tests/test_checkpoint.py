import pytest
import torch
from tests.conftest import padded_batch

from lanistr.checkpoint import WEIGHTS_NAME
from lanistr.errors import CheckpointError
from lanistr.nn import (
    LanistrForMaskedLM,
    LanistrForSequenceClassification,
    LanistrModel,
    load_model,
)


def test_save_load_round_trip_is_bitwise(tmp_path, tiny_config):
    model = LanistrForMaskedLM(tiny_config).eval()
    model.save_pretrained(tmp_path / "ck")
    again = load_model(tmp_path / "ck").eval()
    assert type(again) is LanistrForMaskedLM
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    ids, mask, types = padded_batch()
    assert torch.equal(model(ids, mask, types).logits, again(ids, mask, types).logits)
    assert not list(tmp_path.glob("ck/.*tmp"))  # no temporaries left behind


def test_encoder_weights_transfer_to_a_new_head(tmp_path, tiny_config):
    mlm = LanistrForMaskedLM(tiny_config)
    mlm.save_pretrained(tmp_path / "ck")
    with pytest.warns(UserWarning, match="freshly initialised"):
        cls = LanistrForSequenceClassification.from_pretrained(tmp_path / "ck", labels=["x", "y"])
    assert torch.equal(cls.model.encoder.layers[1].ffn.fc1.weight,
                       mlm.model.encoder.layers[1].ffn.fc1.weight)
    bare = LanistrModel.from_pretrained(tmp_path / "ck")
    assert torch.equal(bare.encoder.embeddings.token.weight, mlm.model.encoder.embeddings.token.weight)


def test_shape_mismatch_names_tensor_and_shapes(tmp_path, tiny_config):
    LanistrModel(tiny_config).save_pretrained(tmp_path / "ck")
    cfg = (tmp_path / "ck" / "config.json")
    cfg.write_text(cfg.read_text().replace('"ffn_dim": 37', '"ffn_dim": 40'))
    with pytest.raises(CheckpointError, match=r"encoder.layers.0.ffn.fc1.bias has shape \(37,\) in the checkpoint but the model expects \(40,\)"):
        LanistrModel.from_pretrained(tmp_path / "ck")


def test_config_weights_mismatch_and_missing_files(tmp_path, tiny_config):
    LanistrModel(tiny_config).save_pretrained(tmp_path / "ck")
    cfg = (tmp_path / "ck" / "config.json")
    cfg.write_text(cfg.read_text().replace('"num_layers": 2', '"num_layers": 3'))
    with pytest.raises(CheckpointError, match="missing tensors encoder.layers.2"):
        LanistrModel.from_pretrained(tmp_path / "ck")
    (tmp_path / "ck" / WEIGHTS_NAME).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        LanistrModel.from_pretrained(tmp_path / "ck")
    (tmp_path / "ck" / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        LanistrModel.from_pretrained(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        load_model(tmp_path / "nope")
