"""The metrics GLUE reports, in NumPy: accuracy; F1 and accuracy (MRPC,
QQP); Matthews correlation (CoLA); Pearson and Spearman correlation (STS-B).

Each takes 1-D arrays of equal length: predicted and true class indices, or
predicted and true scores. Results are Python floats.
"""

import numpy as np


def accuracy(predictions, labels):
  """The fraction of predictions equal to their label."""
  return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def f1_score(predictions, labels, positive=1):
  """F1 of the positive class: 2 TP / (2 TP + FP + FN); 0 when both the
  predictions and the labels hold no positive."""
  predicted = np.asarray(predictions) == positive
  actual = np.asarray(labels) == positive
  true_positives = np.sum(predicted & actual)
  denominator = np.sum(predicted) + np.sum(actual)
  return float(2.0 * true_positives / denominator) if denominator else 0.0


def matthews_corrcoef(predictions, labels):
  """Matthews correlation of two binary (or multi-class) labelings:
  (c s - sum_k p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)) with c
  correct, s total, p_k / t_k the predicted / true counts of class k (the
  multi-class form, which is (TP TN - FP FN) / sqrt(...) for two classes);
  0 when either labeling is constant."""
  predictions = np.asarray(predictions)
  labels = np.asarray(labels)
  classes = np.union1d(predictions, labels)
  predicted = np.array([np.sum(predictions == k) for k in classes], np.float64)
  actual = np.array([np.sum(labels == k) for k in classes], np.float64)
  correct = float(np.sum(predictions == labels))
  total = float(len(labels))
  numerator = correct * total - np.dot(predicted, actual)
  denominator = np.sqrt((total**2 - np.dot(predicted, predicted)) *
                        (total**2 - np.dot(actual, actual)))
  return float(numerator / denominator) if denominator else 0.0


def pearson_correlation(x, y):
  """Pearson's r; 0 when either input is constant."""
  x = np.asarray(x, np.float64) - np.mean(x)
  y = np.asarray(y, np.float64) - np.mean(y)
  denominator = np.sqrt(np.dot(x, x) * np.dot(y, y))
  return float(np.dot(x, y) / denominator) if denominator else 0.0


def average_ranks(x):
  """Ranks 1..n of x, ties sharing the mean of their ranks."""
  x = np.asarray(x)
  order = np.argsort(x, kind="stable")
  sorted_x = x[order]
  # Start of each run of equal values, and the mean rank of each run.
  starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
  ends = np.r_[starts[1:], len(x)]
  mean_ranks = (starts + 1 + ends) / 2.0  # mean of starts+1 .. ends
  ranks = np.empty(len(x), np.float64)
  ranks[order] = np.repeat(mean_ranks, ends - starts)
  return ranks


def spearman_correlation(x, y):
  """Spearman's rho: Pearson's r of the average ranks."""
  return pearson_correlation(average_ranks(x), average_ranks(y))


def task_metrics(kind, predictions, labels):
  """{metric name: value} of a task's metrics kind (TaskProcessor.metrics).

  Args:
    kind: "accuracy", "f1_accuracy", "matthews" or "correlation".
    predictions, labels: class indices, or scores for "correlation".
  """
  if kind == "correlation":
    return {"pearson": pearson_correlation(predictions, labels),
            "spearman": spearman_correlation(predictions, labels)}
  metrics = {"accuracy": accuracy(predictions, labels)}
  if kind == "f1_accuracy":
    metrics["f1"] = f1_score(predictions, labels)
  elif kind == "matthews":
    metrics["matthews_corr"] = matthews_corrcoef(predictions, labels)
  return metrics
