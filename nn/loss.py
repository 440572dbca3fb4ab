"""Softmax cross-entropy from logits, with PyTorch's label smoothing."""
import numpy as np

from .module import Module


def log_softmax(z):
    """log softmax along axis 1, via log-sum-exp: finite for logits of any size (a gap between
    two logits past the float range, e.g. -3e38 against 3e38 in float32, gives -inf: p = 0)."""
    with np.errstate(over="ignore"):
        shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class CrossEntropyLoss(Module):
    """Mean (or summed) cross-entropy between softmax(logits) and smoothed one-hot targets.

    Math, with K classes and smoothing eps (Szegedy et al. 2016, as PyTorch):
        q = (1 - eps)*onehot(y) + eps/K         (eps/K goes to every class, the true one included)
        loss_i = -sum_k q_k * log_softmax(z_i)_k = (1 - eps)*NLL_i + eps*mean_k(-log p_ik)
        loss = mean over samples whose label is not ignore_index
    Backward:  dL/dz = (softmax(z) - q) / N_valid   (rows with an ignored label get 0)
    Shapes: logits (N, K), target (N,) integers in [0, K).   Cache: probabilities, q, N_valid.
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__()
        if weight is not None:
            raise ValueError("CrossEntropyLoss: class weights are not supported (weight must be None)")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"CrossEntropyLoss: reduction must be 'mean' or 'sum', got {reduction!r}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing}")
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing

    def extra_repr(self):
        return f"label_smoothing={self.label_smoothing}"

    def check_inputs(self, logits, target):
        if not isinstance(logits, np.ndarray) or logits.dtype.kind != "f" or logits.ndim != 2:
            got = (f"shape {logits.shape}, dtype {logits.dtype}" if isinstance(logits, np.ndarray)
                   else type(logits).__name__)
            raise ValueError(f"CrossEntropyLoss: expected logits as a 2-D float array (N, K), got {got}")
        target = np.asarray(target)
        if target.dtype.kind not in "iu" or target.shape != (logits.shape[0],):
            raise ValueError(f"CrossEntropyLoss: expected integer targets of shape ({logits.shape[0]},), "
                             f"got shape {target.shape}, dtype {target.dtype}")
        K = logits.shape[1]
        bad = (target != self.ignore_index) & ((target < 0) | (target >= K))
        if bad.any():
            raise ValueError(f"CrossEntropyLoss: labels must be in [0, {K - 1}] for {K} classes, "
                             f"got {np.unique(target[bad])[:10].tolist()}")

    def forward(self, logits, target):
        target = np.asarray(target)
        N, K = logits.shape
        valid = target != self.ignore_index
        logp = log_softmax(logits)
        eps = self.label_smoothing
        q = np.full_like(logp, eps / K)
        q[np.flatnonzero(valid), target[valid]] += 1.0 - eps
        q[~valid] = 0.0
        # a class without target mass adds nothing, even where log p = -inf (0 * -inf is NaN)
        per_sample = -np.multiply(q, logp, out=np.zeros_like(q), where=q > 0).sum(axis=1)
        n_valid = int(valid.sum())
        divisor = n_valid if self.reduction == "mean" else 1
        self.cache = {"probs": np.exp(logp), "q": q, "valid": valid, "divisor": divisor}
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(per_sample.sum() / divisor)

    def backward(self, dout=1.0):
        cache = self.saved()
        grad = (cache["probs"] - cache["q"]) * cache["valid"][:, None]
        if cache["divisor"] == 0:   # every target ignored: no sample contributes
            return grad
        return grad * (dout / cache["divisor"])
