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
