"""The task contract: typed optional fields checked when a task is built, labels-only metadata."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pes import tasks
from pes.tasks import DatasetInfo, SystemData, Task, TaskContractError

SYSTEM = tasks.make("linear_quadratic", dim=2, horizon=4).system


def task(**fields):
    metadata = fields.pop("metadata", {})
    return Task("demo", SYSTEM, jnp.zeros(2), lambda theta, key: {}, metadata, **fields)


def test_the_cheap_tasks_fill_their_fields():
    assert tasks.make("influence_balancing").optimum == pytest.approx(-1 / 6)
    toy = tasks.make("toy_regression")
    assert toy.objective == "meta_objective" and toy.differentiable and toy.full_run is None
    assert tasks.make("linear_control").cost_metric == "env_steps"
    assert tasks.make("linear_quadratic").metadata == {}


def test_a_complete_task_passes_and_reports_its_facts():
    keys = jax.random.split(jax.random.key(0), 3)
    t = task(
        differentiable=False,
        objective="acc",
        cost_metric="env_steps",
        dataset=DatasetInfo("toy", "memory", 10),
        full_run=lambda theta, key: {},
        eval_keys=keys,
        inner_curve=lambda theta, key: jnp.zeros(4),
        baseline_curve=lambda opt, key: jnp.zeros(4),
        system_data=SystemData(np.zeros(3), lambda data: SYSTEM),
        metadata={"hidden": [8, 8], "label": "x", "size": 3, "none": None},
    )
    t.require("full_run", "eval_keys", by="the test")
    assert t.info() == {
        "hidden": [8, 8],
        "label": "x",
        "size": 3,
        "none": None,
        "objective": "acc",
        "differentiable": False,
        "cost_metric": "env_steps",
        "dataset": "toy",
        "data_origin": "memory",
        "num_train": 10,
    }


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"differentiable": None}, "differentiable=None is invalid; allowed: True or False"),
        ({"differentiable": 1}, "differentiable=1 is invalid; allowed: True or False"),
        ({"cost_metric": 3}, "cost_metric=3 is invalid; allowed: a metric name or None"),
        ({"objective": ""}, "objective='' is invalid"),
        (
            {"dataset": ("mnist", "npz")},
            "dataset=('mnist', 'npz') is invalid; allowed: pes.tasks.DatasetInfo",
        ),
        ({"dataset": DatasetInfo("mnist", None)}, "dataset=DatasetInfo(name='mnist', origin=None"),
        ({"full_run": "train"}, "full_run='train' is invalid; allowed: a function (theta, key)"),
        (
            {"eval_keys": np.zeros(3)},
            "eval_keys=array([0., 0., 0.]) is invalid; allowed: a non-empty 1-D array",
        ),
        ({"eval_keys": jax.random.key(0)}, "eval_keys=Array((), dtype=key<fry>)"),
        ({"inner_curve": 1.0}, "inner_curve=1.0 is invalid"),
        ({"baseline_curve": [1]}, "baseline_curve=[1] is invalid"),
        ({"system_data": (np.zeros(2), None)}, "system_data=(array([0., 0.]), None) is invalid"),
        (
            {"metadata": {"fn": print}},
            "metadata['fn']=<built-in function print> is invalid; allowed: a string",
        ),
        ({"metadata": {"arr": np.zeros(2)}}, "metadata['arr']=array([0., 0.]) is invalid"),
        (
            {"metadata": {"full_run": None}},
            "metadata key 'full_run' is a Task field; pass full_run=... to Task",
        ),
        ({"metadata": {"cost_metric": "env_steps"}}, "metadata key 'cost_metric' is a Task field"),
    ],
)
def test_a_bad_field_fails_at_build_in_one_line(fields, message):
    with pytest.raises(TaskContractError) as info:
        task(**fields)
    text = str(info.value)
    assert text.startswith("task 'demo': ") and message in text and "\n" not in text, text


def test_the_core_fields_are_checked():
    with pytest.raises(
        TaskContractError, match="system=None is invalid; allowed: a pes.systems.UnrolledSystem"
    ):
        Task("demo", None, jnp.zeros(2), lambda theta, key: {})
    with pytest.raises(TaskContractError, match="evaluate=3 is invalid"):
        Task("demo", SYSTEM, jnp.zeros(2), 3)
    with pytest.raises(TypeError):  # the optional fields are keyword-only
        Task("demo", SYSTEM, jnp.zeros(2), lambda theta, key: {}, {}, False)


def test_require_names_the_task_the_field_and_the_consumer():
    toy = tasks.make("toy_regression")
    with pytest.raises(TaskContractError) as info:
        toy.require("objective", "full_run", by="post step 'evaluation' of figure5")
    assert str(info.value) == (
        "task 'toy_regression' does not provide full_run (a function (theta, key) -> dict of scalars), "
        "which post step 'evaluation' of figure5 needs"
    )
    with pytest.raises(TaskContractError, match="asks for task field 'ful_run'; allowed: differentiable"):
        toy.require("ful_run", by="a typo")


@pytest.mark.parametrize("name", ["lopt_image_mlp", "mlp_hparams", "mnist_lr_schedule"])
def test_make_only_fills_the_validated_settings(name):
    """A task built from parts: ``make``'s parameters are exactly its `Settings` fields, and the
    settings validate themselves (the same one-line error, whoever builds them; no data is read)."""
    pytest.importorskip("flax")
    import dataclasses
    import importlib
    import inspect

    module = importlib.import_module(tasks.TASK_MODULES[name])
    params = inspect.signature(module.make).parameters
    assert [f.name for f in dataclasses.fields(module.Settings)] == list(params)
    defaults = {k: p.default for k, p in params.items()}
    settings = module.Settings(**defaults)
    assert isinstance(settings.hidden, tuple) and list(settings.hidden) == list(defaults["hidden"])
    with pytest.raises(ValueError, match=rf"^task '{name}': horizon=0 is invalid; allowed: an integer >= 1$"):
        module.Settings(**dict(defaults, horizon=0))
    with pytest.raises(ValueError, match=rf"^task '{name}': horizon=0 is invalid"):
        tasks.make(name, horizon=0)
