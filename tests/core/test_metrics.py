import numpy as np
import torch

from sparsetrain.core.metrics import (
    classification_metrics,
    regression_metrics,
    selected_features,
    sparsity_metrics,
    speed_metrics,
)
from sparsetrain.core.models import build_model, prunable_weights


def test_classification_metrics_agree_with_hand_counts():
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    assert m["test_accuracy"] == 0.75
    assert 0 < m["test_f1_macro"] < 1


def test_regression_metrics():
    y = np.array([1.0, 2.0, 3.0])
    m = regression_metrics(y, y, prefix="val")
    assert m["val_r2"] == 1.0 and m["val_rmse"] == 0.0


def test_density_counts_prunable_weights_and_all_parameters_apart():
    model = build_model("linear", 4, 2)
    with torch.no_grad():
        prunable_weights(model)[0][0].zero_()  # 4 of 8 weights
        model[1].bias.fill_(1.0)
    m = sparsity_metrics(model)
    assert m["density"] == 0.5
    assert m["total_params"] == 10 and m["nonzero_params"] == 6
    assert m["density_all"] == 0.6
    assert m["bytes_dense"] == 40


def test_selected_features_are_the_nonzero_columns():
    model = build_model("linear", 3, 2)
    with torch.no_grad():
        prunable_weights(model)[0][:, 1] = 0
    names = [row["feature"] for row in selected_features(model, ["a", "b", "c"])]
    assert names == ["a", "c"]


def test_speed_metrics_are_positive():
    m = speed_metrics(build_model("linear", 8, 2), np.zeros((16, 8), np.float32), repeats=3, large_batch=64)
    assert m["latency_ms_p50"] > 0 and m["throughput_per_s"] > 0
