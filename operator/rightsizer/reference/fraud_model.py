"""The local backend's reference model, made here: a synthetic stand-in for the credit-card-fraud data set of
SageMaker Inference Recommender's launch write-up, an XGBoost binary classifier trained on it, and the request
payloads that load tests send to it. Nothing is downloaded; the data comes from a fixed seed.

The data has the seed's shape (Time, V1..V28, Amount, Class; 284,315 legitimate and 492 fraudulent rows). The
V columns are independent normals with the spreads of the real data's PCA components; fraud rows are shifted
on the components where real frauds differ most, by a fraction of the real shift chosen so that the task is
learnable but not trivial (held-out AUC-PR 0.93 with 300 trees; the full real shift makes it trivial).

Run: python -m rightsizer.reference.fraud_model DIRECTORY [--trees 300] [--seed N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import xgboost

FEATURES = ("Time", *(f"V{i}" for i in range(1, 29)), "Amount")
LABEL = "Class"
LEGITIMATE_ROWS = 284_315
FRAUD_ROWS = 492
SEED = 284_807
TREES = 300
# The real data's Time column: seconds since its first transaction, over two days.
LAST_SECOND = 172_792
# The write-up's payload size; 17 rows of this data at full precision.
PAYLOAD_BYTES = 10_000
HELD_OUT_FRACTION = 0.2

# Standard deviations of V1..V28 in the real data: principal components, largest first.
COMPONENT_SPREADS = np.array([
    1.959, 1.651, 1.516, 1.416, 1.380, 1.332, 1.237, 1.194, 1.099, 1.089, 1.021, 0.999, 0.995, 0.959,
    0.915, 0.876, 0.849, 0.838, 0.814, 0.771, 0.735, 0.726, 0.624, 0.606, 0.521, 0.482, 0.404, 0.330])
# Means of the real data's fraud rows on its most discriminative components (legitimate rows have mean ~0).
REAL_FRAUD_MEANS = {"V1": -4.77, "V2": 3.62, "V3": -7.03, "V4": 4.54, "V10": -5.68, "V12": -6.26,
                    "V14": -6.97, "V17": -6.67}
# The share of the real shift given to fraud rows. With 300 trees and the default seed, held-out AUC-PR is 0.88 at
# 0.32, 0.93 at 0.35 (the published real-data figure is about 0.92) and 0.99 at 0.5; ROC-AUC stays >= 0.999.
FRAUD_SIGNAL = 0.35
# Amount is log-normal like the real one (median about 22, long tail), in cents.
AMOUNT_LOG_MEDIAN, AMOUNT_LOG_SPREAD = np.log(22.0), 1.6
# XGBClassifier.save_model() stores this attribute; servers built on the sklearn wrapper (MLServer) read it to
# load the artifact as a classifier rather than a regressor.
SKLEARN_MARKER = {"_estimator_type": "classifier"}


@dataclasses.dataclass(frozen=True)
class Dataset:
    features: np.ndarray  # float64, one column per name in FEATURES
    labels: np.ndarray  # int8, 1 for fraud

    @property
    def fraud_rows(self) -> int:
        return int(self.labels.sum())

    @property
    def legitimate_rows(self) -> int:
        return len(self.labels) - self.fraud_rows

    def take(self, rows: np.ndarray) -> Dataset:
        return Dataset(self.features[rows], self.labels[rows])


@dataclasses.dataclass(frozen=True)
class Example:
    """What write_example() wrote, and how well the model does on rows it was not trained on."""

    model: Path
    payload_row: Path
    payload: Path
    metadata: Path
    payload_rows: int
    roc_auc: float
    auc_pr: float


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask, which taskset and cpusets narrow)."""
    return len(os.sched_getaffinity(0))


def generate_dataset(seed: int = SEED, *, legitimate_rows: int = LEGITIMATE_ROWS,
                     fraud_rows: int = FRAUD_ROWS) -> Dataset:
    rng = np.random.default_rng(seed)
    rows = legitimate_rows + fraud_rows
    components = rng.standard_normal((rows, len(COMPONENT_SPREADS))) * COMPONENT_SPREADS
    labels = np.zeros(rows, dtype=np.int8)
    labels[rng.choice(rows, size=fraud_rows, replace=False)] = 1
    components[labels == 1] += FRAUD_SIGNAL * fraud_shift()
    time = np.sort(rng.integers(0, LAST_SECOND + 1, size=rows)).astype(np.float64)
    amount = np.round(np.exp(rng.normal(AMOUNT_LOG_MEDIAN, AMOUNT_LOG_SPREAD, size=rows)), 2)
    return Dataset(np.column_stack([time, components, amount]), labels)


def fraud_shift() -> np.ndarray:
    """The real fraud rows' mean on V1..V28, zero on components where they do not stand out."""
    shift = np.zeros(len(COMPONENT_SPREADS))
    for name, mean in REAL_FRAUD_MEANS.items():
        shift[FEATURES.index(name) - 1] = mean
    return shift


def split(dataset: Dataset, *, held_out_fraction: float = HELD_OUT_FRACTION,
          seed: int = SEED) -> tuple[Dataset, Dataset]:
    """Training and held-out rows, each class split in the same proportion: with 492 frauds a plain random
    split would leave the held-out share of frauds to chance."""
    rng = np.random.default_rng(seed)
    training, held_out = [], []
    for label in (0, 1):
        rows = rng.permutation(np.flatnonzero(dataset.labels == label))
        cut = len(rows) - round(len(rows) * held_out_fraction)
        training.append(rows[:cut])
        held_out.append(rows[cut:])
    return dataset.take(np.sort(np.concatenate(training))), dataset.take(np.sort(np.concatenate(held_out)))


def train(dataset: Dataset, *, trees: int = TREES, seed: int = SEED, threads: int | None = None) -> xgboost.Booster:
    """The same learner as XGBClassifier(tree_method="hist", max_depth=6, learning_rate=0.1,
    scale_pos_weight=legitimate/fraud), trained through the core API so that scikit-learn is not needed."""
    params = {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "max_depth": 6,
        "learning_rate": 0.1,
        # Weighs the rare class up to balance the classes, as the write-up's model does.
        "scale_pos_weight": dataset.legitimate_rows / dataset.fraud_rows,
        "nthread": threads or available_cores(),
        "seed": seed,
    }
    # No feature names: a model that has them refuses unnamed input on the DMatrix path (KServe's xgbserver),
    # and requests carry bare rows.
    matrix = xgboost.DMatrix(dataset.features, label=dataset.labels)
    return xgboost.train(params, matrix, num_boost_round=trees)


def predict(booster: xgboost.Booster, features: np.ndarray) -> np.ndarray:
    """Fraud probabilities, one per row."""
    return booster.inplace_predict(features)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random fraud scores above a random legitimate row (ties
    count half), from the Mann-Whitney rank sum."""
    order = np.argsort(scores, kind="stable")
    _, tie_group, tie_sizes = np.unique(scores[order], return_inverse=True, return_counts=True)
    last = np.cumsum(tie_sizes)
    ranks = np.empty(len(scores))
    ranks[order] = ((last - tie_sizes + 1 + last) / 2)[tie_group]  # 1-based ranks, ties share their mean
    positives = int(labels.sum())
    negatives = len(labels) - positives
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def auc_pr(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision: the mean, over the frauds, of the precision
    at the threshold that first includes each (scikit-learn's average_precision_score)."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    true_positives = np.cumsum(sorted_labels)
    # Only the last row of a run of tied scores is a threshold.
    thresholds = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    precision = true_positives[thresholds] / (thresholds + 1)
    recall_gain = np.diff(np.r_[0, true_positives[thresholds]])
    return float((precision * recall_gain).sum() / true_positives[-1])


def csv_line(row: np.ndarray) -> str:
    """One row as text/csv at full precision: the shortest text that reads back as the same float64."""
    return ",".join(repr(value) for value in row.tolist())


def payload_lines(features: np.ndarray, max_bytes: int = PAYLOAD_BYTES) -> list[str]:
    """As many leading rows as fit in max_bytes of text/csv, newline-terminated (at least one row)."""
    lines: list[str] = []
    size = 0
    for row in features:
        line = csv_line(row) + "\n"
        if lines and size + len(line) > max_bytes:
            break
        lines.append(line)
        size += len(line)
    return lines


def save_classifier(booster: xgboost.Booster, path: Path) -> None:
    """Save as XGBClassifier.save_model() does: the same bytes, marker included, without scikit-learn."""
    booster.set_attr(scikit_learn=json.dumps(SKLEARN_MARKER))
    try:
        booster.save_model(path)
    finally:
        booster.set_attr(scikit_learn=None)


def write_example(directory: str | os.PathLike, *, trees: int = TREES, seed: int = SEED,
                  legitimate_rows: int = LEGITIMATE_ROWS, fraud_rows: int = FRAUD_ROWS) -> Example:
    """Generate the data, train on 80 % of it, and write model.ubj, payload-row.csv, payload.csv (about
    10 KB) and metadata.json into directory. The payload rows are held-out rows."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    training, held_out = split(generate_dataset(seed, legitimate_rows=legitimate_rows, fraud_rows=fraud_rows),
                               seed=seed)
    booster = train(training, trees=trees, seed=seed)
    scores = predict(booster, held_out.features)
    lines = payload_lines(held_out.features)
    example = Example(model=directory / "model.ubj", payload_row=directory / "payload-row.csv",
                      payload=directory / "payload.csv", metadata=directory / "metadata.json",
                      payload_rows=len(lines), roc_auc=roc_auc(held_out.labels, scores),
                      auc_pr=auc_pr(held_out.labels, scores))
    save_classifier(booster, example.model)
    example.payload_row.write_text(lines[0])
    example.payload.write_text("".join(lines))
    example.metadata.write_text(json.dumps({
        "features": list(FEATURES),
        "label": LABEL,
        "rows": {"legitimate": legitimate_rows, "fraud": fraud_rows},
        "held_out_rows": {"legitimate": held_out.legitimate_rows, "fraud": held_out.fraud_rows},
        "seed": seed,
        "trees": trees,
        "held_out_roc_auc": round(example.roc_auc, 6),
        "held_out_auc_pr": round(example.auc_pr, 6),
        "payload_rows": example.payload_rows,
        "xgboost": xgboost.__version__,
    }, indent=2) + "\n")
    return example


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rightsizer.reference.fraud_model",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--trees", type=int, default=TREES)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    example = write_example(args.directory, trees=args.trees, seed=args.seed)
    print(f"wrote {example.model}, {example.payload} ({example.payload_rows} rows) and {example.metadata}; "
          f"held-out ROC-AUC {example.roc_auc:.4f}, AUC-PR {example.auc_pr:.4f}")


if __name__ == "__main__":
    main()
