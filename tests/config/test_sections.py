import pytest

from sparsetrain.config import SparsetrainConfig, flatten, parse_config, unflatten
from sparsetrain.errors import SparsetrainError


def test_defaults_match_design():
    cfg = parse_config({})
    assert cfg.data.source == "digits"
    assert cfg.sparsity.penalty == "l1"
    assert cfg.model.kind == "linear"
    assert cfg.flat()["sparsity.penalty"] == "l1"


def test_flatten_round_trips():
    tree = SparsetrainConfig().model_dump(mode="json")
    assert unflatten(flatten(tree)) == tree


@pytest.mark.parametrize(
    "params, key",
    [
        ({"data": {"source": "mnist"}}, "data.source"),
        ({"compression": {"method": "umap", "n_components": 3}}, "compression.method"),
        ({"sparsity": {"penalty": "l3"}}, "sparsity.penalty"),
        ({"sparsity": {"strength": -1.0}}, "sparsity.strength"),
        ({"data": {"test_size": 0.5, "val_size": 0.5}}, "data.test_size"),
        ({"model": {"kidn": "mlp"}}, "model.kidn"),
        ({"training": {"device": "tpu"}}, "training.device"),
        ({"compression": {"method": "pca"}}, "compression.n_components"),
        ({"model": {"kind": "cnn"}, "compression": {"method": "pca", "n_components": 5}}, "compression.method"),
        ({"data": {"source": "table"}}, "data.target"),
    ],
)
def test_bad_parameters_name_their_key(params, key):
    with pytest.raises(SparsetrainError) as error:
        parse_config(params)
    message = str(error.value)
    assert key in message
    assert "\n" not in message


def test_hidden_sizes_parse_from_cli_strings():
    assert parse_config({"model": {"hidden": "[64, 32]"}}).model.hidden == (64, 32)


@pytest.mark.parametrize(
    "params, named",
    [
        ({"evaluaton": {"cv_folds": 3}}, "unknown parameter section 'evaluaton' (did you mean 'evaluation'?)"),
        ({"trainig": {"epochs": 2}}, "did you mean 'training'"),
        ({"sparsity": {"strenght": 1e-3}}, "did you mean 'strength'"),
        ({"registry": {"model_name": "a/b"}}, "registry.model_name"),
        ({"registry": {"model_name": "a:b"}}, "registry.model_name"),
        ({"registry": {"model_name": " "}}, "registry.model_name"),
        ({"data": {"separator": ";;"}}, "data.separator"),
    ],
)
def test_unknown_sections_keys_and_bad_names_are_one_line(params, named):
    with pytest.raises(SparsetrainError) as error:
        parse_config(params)
    assert named in str(error.value) and "\n" not in str(error.value)


def test_model_name_follows_the_task_unless_set():
    registry = parse_config({}).registry
    assert registry.name_for("classification") == "sparsetrain-classifier"
    assert registry.name_for("regression") == "sparsetrain-regressor"
    assert parse_config({"registry": {"model_name": "mine"}}).registry.name_for("regression") == "mine"


def test_every_shipped_parameter_file_parses():
    """conf/base holds only known sections and keys: nothing there is silently ignored."""
    from pathlib import Path

    import yaml

    conf = Path(__file__).resolve().parents[2] / "conf" / "base"
    params = {}
    for path in sorted(conf.glob("parameters*.yml")):
        params.update(yaml.safe_load(path.read_text()))
    parse_config(params)
