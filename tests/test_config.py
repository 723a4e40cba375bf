import pytest

from lanistr.config import (
    PRESETS,
    AttentionConfig,
    LanistrConfig,
    TrainConfig,
    apply_overrides,
    from_dict,
    load_config_file,
    parse_yaml,
)
from lanistr.errors import ConfigError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json_and_yaml(name):
    config = LanistrConfig.from_name(name)
    again = from_dict(LanistrConfig, parse_yaml(__import__("yaml").safe_dump(config.to_dict())))
    assert again == config
    assert LanistrConfig.from_any(config.to_dict()) == config


def test_mini_preset_sizes():
    c = LanistrConfig.from_name("mini")
    assert (c.hidden_size, c.num_layers, c.num_heads, c.ffn_dim) == (256, 4, 4, 1024)
    d = LanistrConfig.from_name("lanistr")
    assert (d.position, d.embed_scale, d.activation, d.norm, d.ffn_dim) == (
        "sinusoidal", True, "relu", "post", 2048)


@pytest.mark.parametrize("fields, message", [
    ({"num_heads": 5}, "num_heads=5 does not divide hidden_size=256"),
    ({"dropout": 1.5}, "dropout=1.5 must be in [0, 1)"),
    ({"activation": "tanh"}, "activation='tanh' is not one of"),
    ({"hidden_size": "big"}, "hidden_size: expected an integer"),
    ({"pad_token_id": 40000}, "pad_token_id=40000 must be in [0, vocab_size=30522)"),
    ({"colour": 1}, "unknown key model.colour"),
    ({"attention": {"backend": "nope"}}, "attention.backend='nope' is not a registered backend"),
    ({"attention": {"backend": "full", "window": 3}}, "unknown key model.attention.window (valid: none)"),
])
def test_validation_errors_name_the_field_and_values(fields, message):
    with pytest.raises(ConfigError) as err:
        LanistrConfig.from_any({"preset": "mini", **fields})
    assert message in str(err.value)


def test_overrides_and_yaml12_floats(tmp_path):
    data = apply_overrides({"train": {}}, ["train.lr=3e-4", "model.attention.backend=full",
                                           "train.max_steps=7"])
    assert data["train"]["lr"] == 3e-4 and isinstance(data["train"]["lr"], float)
    train = from_dict(TrainConfig, data["train"], "train")
    assert train.max_steps == 7
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["nonsense"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml:"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config_file(tmp_path / "missing.yaml")


def test_train_config_validation():
    with pytest.raises(ConfigError, match="train.batch_size=0 must be >= 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="train.lr"):
        TrainConfig(lr=-1.0)


def test_attention_config_flat_yaml_form():
    a = AttentionConfig.from_dict({"backend": "full"})
    assert a.to_dict() == {"backend": "full"}


def test_one_file_where_a_list_of_files_may_stand(tmp_path):
    from lanistr.tasks.run_config import PretrainDataConfig

    data = apply_overrides({}, [f"data.train={tmp_path / 'a.txt'}", "data.eval=[b.txt, c.txt]"])
    parsed = from_dict(PretrainDataConfig, data["data"], "data")
    assert parsed.train == [str(tmp_path / "a.txt")] and parsed.eval == ["b.txt", "c.txt"]
    with pytest.raises(ConfigError, match="data.train: expected a list, got 3"):
        from_dict(PretrainDataConfig, {"train": 3}, "data")
