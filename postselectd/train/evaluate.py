"""The held-out numbers on the model card: the whole procedure fitted on some shoots and
measured on the others, beside the shipped model."""

from __future__ import annotations

import numpy as np

from postselectd.config import RatingPolicy, TrainConfig
from postselectd.train.dataset import Dataset, TrainError
from postselectd.train.fit import (
    KEEPER,
    SEED,
    fit,
    kept_as_rated,
    recall_interval,
    recall_interval_in_scenes,
    recall_precision,
    rejecting,
)

HELD_OUT = 0.3  # share of shoots held out for the numbers on the model card


def roc_auc(p: np.ndarray, y: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    # Mann-Whitney U with average ranks for ties.
    values = np.concatenate([pos, neg])
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def default_keeps(X: np.ndarray, policy: RatingPolicy) -> np.ndarray:
    """What the shipped model keeps: no reason that rejects (``rejecting``) and p at or
    above the 2-star line."""
    return (X[:, KEEPER] >= policy.two_stars_from) & ~rejecting(X, policy).any(1)


def split_held_out(data: Dataset, seed: int = SEED) -> np.ndarray:
    """A boolean mask of held-out frames: ~HELD_OUT of the shoots, with both classes on
    both sides (another draw when a side would miss one)."""
    shoots = np.unique(data.shoot)
    n_test = max(1, round(len(shoots) * HELD_OUT))
    for attempt in range(50):
        rng = np.random.default_rng(seed + attempt)
        test_shoots = rng.permutation(shoots)[:n_test]
        test = np.isin(data.shoot, test_shoots)
        ys, yt = data.y[~test], data.y[test]
        if ys.sum() >= 2 and (1 - ys).sum() >= 2 and yt.sum() >= 1 and (1 - yt).sum() >= 1:
            return test
    raise TrainError(
        "cannot hold out shoots with both selects and rejects in them: rate photos in more "
        "folders (shoots), or more of each kind"
    )


def evaluate(data: Dataset, test: np.ndarray, rules: TrainConfig, policy: RatingPolicy) -> dict:
    """Fit on the other shoots, report on ``test``, beside the shipped model; "as rated"
    with the reasons that reject under ``policy`` (the photographer's strictness)."""
    rows = np.flatnonzero(~test)
    head, info = fit(data, rows, rules.target_recall, rules.respect_reasons, policy)
    p = head.proba(data.X[test], data.E[test])
    y = data.y[test]
    kept = p >= head.threshold
    recall, precision = recall_precision(kept, y)
    low, high, scenes = recall_interval_in_scenes(kept, y, data.E[test], data.shoot[test])
    # The same Clopper-Pearson interval, over the frames it keeps (selects of them).
    p_low, p_high = recall_interval(int(kept[y == 1].sum()), int(kept.sum()))
    rated_recall, rated_precision = recall_precision(
        kept_as_rated(head, data.X[test], p, policy), y
    )
    d_recall, d_precision = recall_precision(default_keeps(data.X[test], policy), y)
    return {
        "recall": round(recall, 4),
        "recall_interval": [round(low, 4), round(high, 4)],
        "precision": round(precision, 4),
        "precision_interval": [round(p_low, 4), round(p_high, 4)],
        "auc": round(roc_auc(p, y), 4),
        "threshold": round(head.threshold, 4),
        "rated_recall": round(rated_recall, 4),
        "rated_precision": round(rated_precision, 4),
        "default_recall": round(d_recall, 4),
        "default_precision": round(d_precision, 4),
        "default_auc": round(roc_auc(data.X[test, KEEPER], y), 4),
        "held_out": {
            # Blocks of consecutive frames when they stood in for shoots (data.shoot_names).
            ("blocks" if data.stand_in_shoots else "shoots"): int(len(np.unique(data.shoot[test]))),
            "images": int(test.sum()),
            "selects": int(y.sum()),
            "select_scenes": scenes,
            "rejects": int((1 - y).sum()),
        },
        **info,
    }
