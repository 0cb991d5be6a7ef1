import pytest

from mtgan.config import Config, load_config
from mtgan.errors import ConfigError


def test_yaml_round_trip(tmp_path):
    cfg = load_config(overrides=["task.n_way=3", "meta.second_order=true", "data.root=/x"])
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    again = load_config(path)
    assert again == cfg and again.task.n_way == 3 and again.meta.second_order is True


def test_overrides_win_over_the_file_and_quick(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task:\n  n_way: 4\npretrain:\n  steps: 7\n")
    cfg = load_config(path, ["pretrain.steps=9"], quick=True)
    assert cfg.task.n_way == 4 and cfg.pretrain.steps == 9 and cfg.meta.steps == 8


@pytest.mark.parametrize(
    "override, message",
    [
        ("task.nway=3", "did you mean 'task.n_way'"),
        ("tsk.n_way=3", "did you mean 'task'"),
        ("task.n_way=0", "task.n_way must be greater than 0"),
        ("task.k_shot=-2", "task.k_shot must be greater than 0"),
        ("pretrain.lr=-0.1", "pretrain.lr must be greater than 0"),
        ("model.ss_granularity=pixel", "model.ss_granularity must be one of"),
        ("model.upsample=bilinear", "model.upsample must be one of"),
        ("pretrain.lr_schedule=cosine", "pretrain.lr_schedule must be one of"),
        ("pretrain.r1=-1", "pretrain.r1 must be 0 or more"),
        ("pretrain.mode_seeking=-1", "pretrain.mode_seeking must be 0 or more"),
        ("adapt.ss_lr=-1e-3", "adapt.ss_lr must be 0 or more"),
        ("pretrain.augment=flip", "pretrain.augment: unknown augmentation 'flip'"),
        ("pretrain.mode_seeking=1 pretrain.batch_size=7", "batch_size must be even"),
        ("task.n_way=five", "task.n_way must be int"),
        ("meta.second_order=1", "must be true or false"),
        ("data.split_fractions=[0.5,0.5]", "split_fractions"),
        ("n_way", "--set expects key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=override.split(" "))


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["task.shots=3"])
    assert "task.k_shot" in str(err.value) and "task.q_query" in str(err.value)


def test_missing_or_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_defaults_are_valid():
    assert Config.from_dict({}) == Config()
