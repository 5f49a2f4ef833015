"""Randomised cross-checks of cdatlib.metrics against transcriptions of the reference evaluation code.

The notebook nbs/04_metrics.ipynb holds the hand-worked tests; here we compare against the original loops
(TAILOR src/utils/eval.py, MMSA src/MMSA/utils/metricsTop.py, MulT src/eval_metrics.py) on many random inputs.
"""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from cdatlib.dataset import EMOTIONS, IEMOCAP_CLASSES, Task
from cdatlib.metrics import (binary_per_class_metrics, constant_f1, multilabel_metrics, selection_metric, sentiment_metrics,
                             task_metrics)


def tailor_get_accuracy(y, y_pre):
    "TAILOR eval.py get_accuracy, transcribed (rounding to 4 decimals left out)."
    count = 0.0
    for i in range(len(y)):
        y_true = sum(1 for j in range(len(y[i])) if y[i][j] > 0 and y_pre[i][j] > 0)
        all_y = sum(1 for j in range(len(y[i])) if y[i][j] > 0 or y_pre[i][j] > 0)
        count += y_true / max(all_y, 1)
    return count / len(y)


def mmsa_regression(y_pred, y_true):
    "MMSA metricsTop.py __eval_mosei_regression, transcribed without rounding."
    p, t = np.asarray(y_pred, float).ravel(), np.asarray(y_true, float).ravel()
    acc = lambda a, b: np.sum(np.round(a) == np.round(b)) / float(len(b))
    nz = np.array([i for i, e in enumerate(t) if e != 0])
    return {'mae': np.mean(np.abs(p - t)), 'corr': np.corrcoef(p, t)[0][1],
            'acc7': acc(np.clip(p, -3, 3), np.clip(t, -3, 3)), 'acc5': acc(np.clip(p, -2, 2), np.clip(t, -2, 2)),
            'acc2_non0': accuracy_score(p[nz] > 0, t[nz] > 0),
            'f1_non0': f1_score(t[nz] > 0, p[nz] > 0, average='weighted'),
            'acc2_has0': accuracy_score(p >= 0, t >= 0), 'f1_has0': f1_score(t >= 0, p >= 0, average='weighted')}


@pytest.mark.parametrize('seed', range(20))
def test_multilabel_matches_tailor(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random((40, 6)) < 0.2).astype(float)
    prob = rng.random((40, 6)) * 0.8
    prob[rng.random((40, 6)) < 0.1] = 0.5          # exact ties on the threshold
    pred = (prob > 0.5).astype(int)                 # TAILOR getBinaryTensor
    m = multilabel_metrics(y, prob)
    assert m['jaccard_acc'] == pytest.approx(tailor_get_accuracy(y, pred))
    assert m['micro_precision'] == pytest.approx(precision_score(y, pred, average='micro', zero_division=0))
    assert m['micro_recall'] == pytest.approx(recall_score(y, pred, average='micro', zero_division=0))
    # what TAILOR/CDaT print: get_metrics(pred, label)
    assert m['tailor_reported_precision'] == pytest.approx(precision_score(pred, y, average='micro', zero_division=0))
    assert m['tailor_reported_recall'] == pytest.approx(recall_score(pred, y, average='micro', zero_division=0))
    assert m['micro_f1'] == pytest.approx(f1_score(pred, y, average='micro', zero_division=0))  # symmetric


@pytest.mark.parametrize('seed', range(20))
def test_sentiment_matches_mmsa(seed):
    rng = np.random.default_rng(seed)
    t = np.round(rng.uniform(-3, 3, 50) * 3) / 3     # MOSEI-like thirds, with some exact zeros
    t[rng.random(50) < 0.15] = 0.
    p = rng.normal(0, 1.5, 50)
    p[rng.random(50) < 0.1] = 0.5                   # half-way values for the rounding convention
    ours, ref = sentiment_metrics(t, p), mmsa_regression(p, t)
    for k, v in ref.items(): assert ours[k] == pytest.approx(v), k


@pytest.mark.parametrize('seed', range(10))
def test_binary_per_class_matches_mult_argmax(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random((30, 4)) < 0.3).astype(int)
    logits2 = torch.tensor(rng.normal(size=(30, 4, 2)))          # MulT: 8 logits viewed as [4, 2]
    prob = torch.sigmoid(logits2[..., 1] - logits2[..., 0])     # the equivalent single sigmoid
    b = binary_per_class_metrics(y, prob, IEMOCAP_CLASSES)
    for j, c in enumerate(IEMOCAP_CLASSES):
        pred = logits2[:, j].argmax(-1).numpy()
        assert b[f'{c}_acc'] == pytest.approx(accuracy_score(y[:, j], pred))
        assert b[f'{c}_f1_weighted'] == pytest.approx(f1_score(y[:, j], pred, average='weighted', zero_division=0))


def test_task_metrics_with_real_task():
    rng = np.random.default_rng(0)
    cases = [(Task('multilabel', EMOTIONS), 6), (Task('regression', ('sentiment',)), 1),
             (Task('binary_per_class', IEMOCAP_CLASSES), 4)]
    for task, c in cases:
        logits = torch.tensor(rng.normal(size=(16, c)), dtype=torch.float32, requires_grad=True)
        y = torch.tensor(rng.random((16, c)) < 0.4, dtype=torch.float32) if task.kind != 'regression' \
            else torch.tensor(rng.uniform(-3, 3, (16, 1)), dtype=torch.float32)
        m_torch, m_np = task_metrics(task, logits, y), task_metrics(task, logits.detach().numpy(), y.numpy())
        assert m_torch.keys() == m_np.keys()
        for k in m_torch: assert m_torch[k] == pytest.approx(m_np[k], nan_ok=True), k
        assert selection_metric(task)[0] in m_torch


def test_constant_prediction_corr_is_nan():
    m = sentiment_metrics([1., -1., 2.], [0.3, 0.3, 0.3])
    assert math.isnan(m['corr'])


@pytest.mark.parametrize('seed', range(5))
def test_constant_f1_matches_sklearn(seed):
    "The two constant predictors, scored by scikit-learn directly: every class, and each training majority"
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.05, 0.8, 6)
    y_train = (rng.random((300, 6)) < rates).astype(float) * rng.uniform(0.3, 3, (300, 6))  # intensities count as present
    y = (rng.random((80, 6)) < rates).astype(int)
    majority = np.tile(((y_train > 0).mean(0) > 0.5).astype(int), (len(y), 1))
    got = constant_f1(torch.tensor(y, dtype=torch.float), torch.tensor(y_train))
    assert got['all emotions'] == pytest.approx(f1_score(y, np.ones_like(y), average='micro'))
    assert got['class prior'] == pytest.approx(f1_score(y, majority, average='micro', zero_division=0))


def test_constant_f1_refuses_mismatched_classes():
    with pytest.raises(ValueError, match='expected'): constant_f1(np.zeros((4, 6)), np.zeros((5, 4)))
