"""The registry of methods: what each method registers, the contract the CLI relies on, and the
config sections the CLI builds from it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import minidistill as md
from minidistill.compress import registry
from minidistill.compress.registry import AdapterSpec, Method, StudentSpec

from .conftest import IDS, MASK, toy_teacher


def test_every_method_module_registers_and_the_order_is_stable():
    names = list(registry.methods())
    seen = [n for n in names if n in ("transformer", "bilstm", "wid", "theseus", "minialbert")]
    assert seen == ["transformer", "bilstm", "wid", "theseus", "minialbert"]  # the listing order
    assert {"compacter", "compacter++", "houlsby", "pfeiffer"} <= set(registry.methods("adapters"))
    assert "compressed_activations" in registry.methods("training")
    assert all(m.summary for m in registry.methods().values())
    with pytest.raises(KeyError, match="no student method 'nope'; known: transformer, "):
        registry.get("nope", "student")


@pytest.mark.parametrize("name", ["transformer", "bilstm", "wid", "theseus", "minialbert"])
def test_each_student_method_builds_a_student_that_predicts_the_teachers_labels(name):
    """The contract of ``build``: a model with the teacher's head, from the shared spec and the
    method's default settings, that runs on the teacher's inputs."""
    teacher = toy_teacher(dtype="float32")
    method = registry.get(name, "student")
    spec = StudentSpec(kind=name, num_layers=1, hidden_size=8 if name == "wid" else None,
                       num_attention_heads=2 if name == "wid" else None, intermediate_size=12 if name == "wid" else None)
    settings = method.settings() if method.settings else None
    if name == "bilstm":
        settings = dataclasses.replace(settings, hidden_size=8)
    if name == "minialbert":
        settings = dataclasses.replace(settings, embedding_size=8, adapter_reduction=4)
    student = method.build(teacher, spec, settings, 20)
    with md.no_grad():
        logits = student(IDS, MASK).logits.numpy()
    assert logits.shape == (IDS.shape[0], teacher.config.num_labels) and np.all(np.isfinite(logits))
    if method.folds:
        folded = md.fold(student)
        assert type(folded).__name__ == type(teacher).__name__


@pytest.mark.parametrize("name", ["compacter", "compacter++", "houlsby", "pfeiffer"])
def test_each_adapter_method_leaves_only_adapters_layer_norms_and_head_trainable(name):
    model = toy_teacher(dtype="float32")
    before = {n for n, _ in model.named_parameters()}
    registry.get(name, "adapters").build(model, AdapterSpec(reduction=4, phm_n=2))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    added = {n for n, _ in model.named_parameters()} - before
    assert added and added <= trainable
    assert all("LayerNorm" in n or n.startswith("classifier") for n in trainable - added), sorted(trainable - added)


def test_registration_is_checked():
    with pytest.raises(ValueError, match="role"):
        registry.register(Method("x", "s", role="magic"))
    with pytest.raises(ValueError, match="needs build"):
        registry.register(Method("x", "s", role="student"))
    with pytest.raises(ValueError, match="needs callbacks"):
        registry.register(Method("x", "s", role="training"))
    with pytest.raises(ValueError, match="identifier"):
        registry.register(Method("a-b", "s", role="training", settings=StudentSpec, callbacks=dict))
    with pytest.raises(ValueError, match="registered already"):
        registry.register(Method("wid", "another", build=lambda *a: None))


def test_a_registered_method_gets_its_config_section_on_the_command_line():
    from minidistill.cli import _DistillBase, _FinetuneBase, _with_method_sections
    from minidistill.config_io import ConfigError, load_config

    @dataclasses.dataclass
    class Knobs:
        """A made-up training method's settings."""

        strength: float = 0.5  # how much

    method = Method("knobs", "a test method", role="training", settings=Knobs, callbacks=lambda s: {})
    registry.register(method)
    try:
        for base in (_DistillBase, _FinetuneBase):
            cls = _with_method_sections(base, ("student", "training"))
            assert load_config(cls).knobs is None  # off until a key is given
            assert load_config(cls, None, ["--knobs.strength=2"]).knobs == Knobs(2.0)
            with pytest.raises(ConfigError, match="knobs.strenght"):
                load_config(cls, None, ["--knobs.strenght=2"])
    finally:
        registry._METHODS.pop("knobs")
