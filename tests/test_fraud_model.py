"""The local backend's reference model: the synthetic data's shape and signal, the metrics, and what
write_example() leaves on disk. Most tests train on fewer rows and trees than the default, to stay fast."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import xgboost

from rightsizer.reference import fraud_model

SMALL = {"legitimate_rows": 30_000, "fraud_rows": 300}


@pytest.fixture(scope="module")
def small_example(tmp_path_factory):
    return fraud_model.write_example(tmp_path_factory.mktemp("example"), trees=40, **SMALL)


def test_full_size_data_has_the_seed_shape_and_class_counts():
    dataset = fraud_model.generate_dataset()

    assert fraud_model.FEATURES == ("Time", *(f"V{i}" for i in range(1, 29)), "Amount")
    assert dataset.features.shape == (284_807, 30)
    assert (dataset.legitimate_rows, dataset.fraud_rows) == (284_315, 492)
    time, amount = dataset.features[:, 0], dataset.features[:, -1]
    assert time[0] >= 0 and time[-1] <= fraud_model.LAST_SECOND and np.all(np.diff(time) >= 0)
    assert np.all(amount >= 0) and np.array_equal(amount, np.round(amount, 2))
    assert np.isfinite(dataset.features).all()


def test_generation_is_fixed_by_the_seed():
    first = fraud_model.generate_dataset(7, **SMALL)
    again = fraud_model.generate_dataset(7, **SMALL)
    other = fraud_model.generate_dataset(8, **SMALL)

    assert np.array_equal(first.features, again.features) and np.array_equal(first.labels, again.labels)
    assert not np.array_equal(first.features, other.features)


def test_fraud_rows_stand_out_only_on_the_discriminative_components():
    dataset = fraud_model.generate_dataset(legitimate_rows=50_000, fraud_rows=5_000)
    fraud, legitimate = dataset.features[dataset.labels == 1], dataset.features[dataset.labels == 0]
    mean_gap = fraud.mean(axis=0) - legitimate.mean(axis=0)

    for column, name in enumerate(fraud_model.FEATURES):
        expected = fraud_model.FRAUD_SIGNAL * fraud_model.REAL_FRAUD_MEANS.get(name, 0.0)
        # Standard error of the gap is below 0.03 for every V column; Time and Amount are on their own scales.
        tolerance = {"Time": 2_000.0, "Amount": 10.0}.get(name, 0.1)
        assert mean_gap[column] == pytest.approx(expected, abs=tolerance), name


def test_split_keeps_every_row_once_and_the_class_ratio():
    dataset = fraud_model.generate_dataset(**SMALL)
    training, held_out = fraud_model.split(dataset)

    assert (held_out.legitimate_rows, held_out.fraud_rows) == (6_000, 60)
    assert (training.legitimate_rows, training.fraud_rows) == (24_000, 240)
    together = np.concatenate([training.features, held_out.features])
    assert np.array_equal(np.unique(together, axis=0), np.unique(dataset.features, axis=0))


@pytest.mark.parametrize("labels, scores, roc_auc, auc_pr", [
    # Frauds at ranks 1 and 3 of 4: 3 of 4 fraud/legitimate pairs ordered; precision 1 then 2/3.
    ([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], 0.75, (1 + 2 / 3) / 2),
    # A fraud tied with a legitimate row counts half a pair, and both enter at one threshold: precision 1/2.
    ([1, 0, 1], [0.5, 0.5, 0.1], 0.25, (1 / 2 + 2 / 3) / 2),
    ([0, 1, 1], [0.1, 0.2, 0.3], 1.0, 1.0),
])
def test_metrics_match_hand_computed_values(labels, scores, roc_auc, auc_pr):
    labels, scores = np.array(labels), np.array(scores)

    assert fraud_model.roc_auc(labels, scores) == pytest.approx(roc_auc)
    assert fraud_model.auc_pr(labels, scores) == pytest.approx(auc_pr)


def test_the_trained_model_separates_the_classes(small_example):
    assert small_example.roc_auc > 0.98
    assert small_example.auc_pr > 0.5

    booster = xgboost.Booster(model_file=str(small_example.model))
    _, held_out = fraud_model.split(fraud_model.generate_dataset(**SMALL))
    scores = fraud_model.predict(booster, held_out.features)
    assert fraud_model.roc_auc(held_out.labels, scores) == pytest.approx(small_example.roc_auc)
    assert scores[held_out.labels == 1].mean() > 0.5 > scores[held_out.labels == 0].mean()


def test_the_model_is_saved_as_a_classifier(small_example):
    booster = xgboost.Booster(model_file=str(small_example.model))
    config = json.loads(booster.save_config())

    assert small_example.model.name == "model.ubj"
    assert json.loads(booster.attr("scikit_learn")) == {"_estimator_type": "classifier"}
    assert config["learner"]["objective"]["name"] == "binary:logistic"
    assert booster.num_boosted_rounds() == 40 and booster.num_features() == 30
    # Bare rows must be accepted on every prediction path, so the model carries no feature names.
    assert booster.feature_names is None


def test_payloads_are_headerless_full_precision_rows_of_about_10_kb(small_example):
    payload = small_example.payload.read_bytes()
    lines = payload.decode().splitlines()

    assert 10_000 - 750 < len(payload) <= 10_000  # one more row (30 numbers, < 750 B) would not fit
    assert len(lines) == small_example.payload_rows >= 10
    for line in lines:
        values = [float(text) for text in line.split(",")]
        assert len(values) == 30
        # Full precision: the text is the shortest that reads back as the same float64.
        assert ",".join(map(repr, values)) == line
    assert small_example.payload_row.read_text() == lines[0] + "\n"


def test_metadata_describes_the_example(small_example):
    metadata = json.loads(small_example.metadata.read_text())

    assert metadata["features"] == list(fraud_model.FEATURES)
    assert metadata["rows"] == {"legitimate": 30_000, "fraud": 300}
    assert metadata["seed"] == fraud_model.SEED and metadata["trees"] == 40
    assert metadata["held_out_roc_auc"] == pytest.approx(small_example.roc_auc, abs=1e-6)
    assert metadata["held_out_auc_pr"] == pytest.approx(small_example.auc_pr, abs=1e-6)
    assert metadata["xgboost"] == xgboost.__version__


def test_command_line_writes_the_full_size_example(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rightsizer.reference.fraud_model", str(tmp_path), "--trees", "5"],
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert "held-out ROC-AUC" in result.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "metadata.json", "model.ubj", "payload-row.csv", "payload.csv"]
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    assert metadata["rows"] == {"legitimate": 284_315, "fraud": 492}
    assert metadata["held_out_rows"] == {"legitimate": 56_863, "fraud": 98}
