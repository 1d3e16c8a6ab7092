"""Config overrides: typed parsing, unknown fields and bad values are user errors."""

import dataclasses

import pytest

from aigc_zoo import config as config_lib
from aigc_zoo.errors import UserError


@dataclasses.dataclass
class ToyConfig(config_lib.TrainConfig):
    width: int = 8
    rate: float = 0.1
    name: str = "a"
    flag: bool = False
    filters: tuple[int, ...] = (1, 2)


def test_override_parses_each_field_type():
    config = config_lib.override(ToyConfig(), ["width=16", "rate=2e-3", "name=b", "flag=true",
                                               "filters=4,8,16", "epochs=3"])
    assert config == ToyConfig(width=16, rate=2e-3, name="b", flag=True, filters=(4, 8, 16),
                               epochs=3)
    assert ToyConfig().width == 8  # the original is untouched


@pytest.mark.parametrize("assignment, fragment", [
    ("depth=3", "unknown config field 'depth'"),
    ("width", "expected name=value"),
    ("width=wide", "bad value width='wide'"),
    ("flag=maybe", "bad value flag='maybe'"),
    ("filters=4,x", "bad value filters"),
])
def test_override_rejects_bad_assignments(assignment, fragment):
    with pytest.raises(UserError, match=fragment):
        config_lib.override(ToyConfig(), [assignment])


@pytest.mark.parametrize("field, value",
                         [("batch_size", 0), ("epochs", 0), ("steps_per_epoch", -1)])
def test_validate_rejects_impossible_training_values(field, value):
    with pytest.raises(UserError, match=field):
        dataclasses.replace(ToyConfig(), **{field: value}).validate()


def test_dict_round_trip_restores_tuples():
    config = ToyConfig(filters=(3, 5))
    assert config_lib.from_dict(ToyConfig, config_lib.to_dict(config)) == config
    with pytest.raises(UserError, match="does not know"):
        config_lib.from_dict(ToyConfig, {"nope": 1})


@dataclasses.dataclass
class GrownConfig(ToyConfig):
    """ToyConfig after a release added a field: runs saved before it have none."""
    depth: int = config_lib.added_field(2)


def test_a_config_saved_before_a_field_was_added_loads_with_its_default():
    saved = config_lib.to_dict(ToyConfig(width=4))
    assert config_lib.from_dict(GrownConfig, saved) == GrownConfig(width=4, depth=2)
    assert config_lib.from_dict(GrownConfig, {**saved, "depth": 5}).depth == 5
    del saved["width"]  # a field that was always there is still required
    with pytest.raises(UserError, match=r"lacks the GrownConfig fields \['width'\]"):
        config_lib.from_dict(GrownConfig, saved)


def test_a_field_whose_new_default_differs_from_what_older_runs_did():
    from aigc_zoo import registry
    config_class = registry.get_model("cpixelcnn").config_class
    saved = config_lib.to_dict(config_class())
    assert saved.pop("label_map_channels") == 8  # new runs have the label maps
    assert config_lib.from_dict(config_class, saved).label_map_channels == 0  # older: none


def test_gan_runs_saved_before_augmentation_load_without_it():
    from aigc_zoo import registry
    config_class = registry.get_model("dcgan").config_class
    saved = config_lib.to_dict(config_class())
    for name in ("augment", "augment_policy", "ada_target", "ada_interval", "ada_kimg"):
        del saved[name]
    assert config_lib.from_dict(config_class, saved) == config_class()
    assert config_class().augment == "none"
