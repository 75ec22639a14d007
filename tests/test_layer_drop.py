"""Layer dropping (compress/layer_drop.py): the kept layers follow the paper's strategies, and the
student is exactly the teacher run with only those layers."""

from __future__ import annotations

import numpy as np
import pytest

import minidistill as md
from minidistill.compress import registry
from minidistill.compress.layer_drop import LayerDropSettings, kept_layers
from minidistill.compress.registry import StudentSpec
from minidistill.nn.module import ModuleList

from .conftest import IDS, MASK, toy_teacher


def test_strategies_keep_the_layers_the_paper_names():
    assert kept_layers(12, "top", 6) == [0, 1, 2, 3, 4, 5]  # drop the 6 highest
    assert kept_layers(12, "bottom", 4) == [8, 9, 10, 11]
    assert kept_layers(12, "alternate") == [0, 2, 4, 6, 8, 10]
    assert kept_layers(12, "alternate", odd=True) == [1, 3, 5, 7, 9, 11]
    assert kept_layers(12, "symmetric", 4) == [0, 1, 10, 11]  # the middle 8 dropped
    assert kept_layers(12, "symmetric", 5) == [0, 1, 2, 10, 11]
    assert kept_layers(12, "top") == list(range(6))  # default: half
    for strategy in ("top", "bottom", "symmetric"):
        for keep in range(1, 13):
            got = kept_layers(12, strategy, keep)
            assert len(got) == keep and got == sorted(set(got)) and 0 <= got[0] and got[-1] < 12
    with pytest.raises(ValueError, match="strategy must be one of"):
        kept_layers(12, "middle")
    with pytest.raises(ValueError, match="keep must be between 1"):
        kept_layers(12, "top", 13)


@pytest.mark.parametrize("settings", [LayerDropSettings("top", 2), LayerDropSettings("alternate", odd=True),
                                      LayerDropSettings("symmetric", 3), LayerDropSettings("bottom", 1)])
def test_the_student_is_the_teacher_with_only_the_kept_layers(settings):
    teacher = toy_teacher(num_hidden_layers=4)
    kept = kept_layers(4, settings.strategy, settings.keep, settings.odd)
    student = registry.get("layer_drop", "student").build(teacher, StudentSpec(kind="layer_drop"), settings, 10)
    assert student.config.num_hidden_layers == len(kept)
    # the reference: the teacher itself, its layer list cut to the kept ones
    reference = toy_teacher(num_hidden_layers=4)
    reference.bert.encoder.layer = ModuleList([reference.bert.encoder.layer[k] for k in kept])
    with md.no_grad():
        np.testing.assert_array_equal(student.eval()(IDS, MASK).logits.numpy(), reference(IDS, MASK).logits.numpy())


def test_the_command_line_takes_its_section():
    from minidistill.cli import DistillConfig
    from minidistill.config_io import ConfigError, load_config

    cfg = load_config(DistillConfig, None, ["--student.kind=layer_drop", "--layer_drop.strategy=alternate"])
    assert cfg.layer_drop == LayerDropSettings("alternate")
    with pytest.raises(ConfigError, match="layer_drop.stratgy"):
        load_config(DistillConfig, None, ["--layer_drop.stratgy=top"])
