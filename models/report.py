"""Evaluation figures: confusion matrix, per-class precision/recall/F1, the seeds' tables, curves.

Conventions as scikit-learn's classification_report: C[true, pred]; precision = TP/(TP+FP),
recall = TP/(TP+FN), F1 their harmonic mean, 0 where a denominator is 0; macro = plain mean over
classes, weighted = mean weighted by support.
"""
import os

import numpy as np

from nn.serialization import atomic_write


def confusion_matrix(y_true, y_pred, num_classes):
    """C[i, j] = number of samples of true class i predicted as j."""
    return np.bincount(np.asarray(y_true) * num_classes + np.asarray(y_pred),
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(num, den):
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def per_class_scores(cm):
    """{"precision", "recall", "f1", "support"} arrays over classes, plus the averages."""
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    precision = _ratio(tp, cm.sum(axis=0).astype(np.float64))
    recall = _ratio(tp, support.astype(np.float64))
    f1 = _ratio(2 * precision * recall, precision + recall)
    total = support.sum()
    weights = support / total if total else np.zeros(len(support))
    return {
        "precision": precision, "recall": recall, "f1": f1, "support": support,
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro": {k: float(v.mean()) for k, v in (("precision", precision), ("recall", recall), ("f1", f1))},
        "weighted": {k: float((v * weights).sum()) for k, v in
                     (("precision", precision), ("recall", recall), ("f1", f1))},
    }


def classification_report(cm, class_names=None, digits=4):
    """The text table scikit-learn prints, from a confusion matrix."""
    s = per_class_scores(cm)
    names = class_names or [str(i) for i in range(len(cm))]
    width = max(12, max(len(n) for n in names))
    head = f"{'':>{width}} {'precision':>10} {'recall':>10} {'f1-score':>10} {'support':>10}"
    lines = [head, ""]
    for i, n in enumerate(names):
        lines.append(f"{n:>{width}} {s['precision'][i]:>10.{digits}f} {s['recall'][i]:>10.{digits}f} "
                     f"{s['f1'][i]:>10.{digits}f} {s['support'][i]:>10d}")
    total = int(s["support"].sum())
    lines += ["", f"{'accuracy':>{width}} {'':>10} {'':>10} {s['accuracy']:>10.{digits}f} {total:>10d}"]
    for avg in ("macro", "weighted"):
        a = s[avg]
        lines.append(f"{avg + ' avg':>{width}} {a['precision']:>10.{digits}f} {a['recall']:>10.{digits}f} "
                     f"{a['f1']:>10.{digits}f} {total:>10d}")
    return "\n".join(lines)


def markdown_report(results, class_names):
    """The seed README's two tables: loss/accuracy per split, then per-class P/R/F1 per split.

    results: {split: {"loss": float, "cm": confusion matrix}} in display order.
    """
    splits = list(results)
    scores = {k: per_class_scores(v["cm"]) for k, v in results.items()}
    cap = lambda s: s.capitalize()
    lines = ["| | " + " | ".join(cap(s) for s in splits) + " |",
             "| :---: |" + " :---: |" * len(splits),
             "| Loss | " + " | ".join(f"{results[s]['loss']:.4f}" for s in splits) + " |",
             "| Accuracy (%) | " + " | ".join(f"{100 * scores[s]['accuracy']:.2f}" for s in splits) + " |",
             ""]
    cols = [(m, s) for m in ("precision", "recall", "f1") for s in splits]
    title = {"precision": "Precision", "recall": "Recall", "f1": "F1 Score"}
    lines.append("| Class | " + " | ".join(f"{cap(s)} {title[m]}" for m, s in cols) + " |")
    lines.append("| :---: |" + " :---: |" * len(cols))
    for i, name in enumerate(class_names):
        lines.append(f"| {name} | " + " | ".join(f"{scores[s][m][i]:.4f}" for m, s in cols) + " |")
    return "\n".join(lines)


def report_json(results, class_names):
    """The same figures as plain numbers, for scripts."""
    out = {}
    for split, r in results.items():
        s = per_class_scores(r["cm"])
        out[split] = {
            "loss": float(r["loss"]), "accuracy": s["accuracy"],
            "per_class": {name: {"precision": float(s["precision"][i]), "recall": float(s["recall"][i]),
                                 "f1": float(s["f1"][i]), "support": int(s["support"][i])}
                          for i, name in enumerate(class_names)},
            "macro_avg": s["macro"], "weighted_avg": s["weighted"],
            "confusion_matrix": r["cm"].tolist(),
        }
    return out


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path):
    """fig as a PNG at `path`, written atomically (a full disk leaves the old file and says so)."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=150, bbox_inches="tight"))
    _pyplot().close(fig)


def plot_curves(history, out_dir, prefix):
    """<prefix>_loss.png and <prefix>_accuracy.png: train and validation against epoch."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    paths = []
    for key, label in (("loss", "Loss"), ("accuracy", "Accuracy")):
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(epochs, [row[f"train_{key}"] for row in history], "o-", label="Training")
        ax.plot(epochs, [row[f"val_{key}"] for row in history], "o-", label="Validation")
        ax.set_xlabel("Epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.set_title(f"{label} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        path = os.path.join(out_dir, f"{prefix}_{key}.png")
        save_figure(fig, path)
        paths.append(path)
    return paths


def plot_confusion_matrix(cm, class_names, path, title):
    """The confusion matrix as a PNG: counts in each cell, rows the true class, columns the
    predicted one (C[true, pred]), shaded by each row's share so that every class reads alike."""
    plt = _pyplot()
    cm = np.asarray(cm)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), class_names, rotation=45 if max(map(len, class_names)) > 2 else 0, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)
    return path
