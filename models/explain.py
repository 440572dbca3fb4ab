"""What the network looks at: saliency maps and Grad-CAM, from the hand-written backward passes.

Both start from the score of one class, S = logits[target] (before the softmax), of a model in
eval mode, and use backward the way training does, with dlogits = onehot(target):

Saliency (Simonyan et al. 2014): how much each input pixel moves the score,
    saliency[n, h, w] = max over channels c of |dS/dx[n, c, h, w]|
the whole network's backward, down to the input.

Grad-CAM (Selvaraju et al. 2017): which places of a late feature map A (C maps, h x w) the score
depends on, weighted by how much it depends on each map:
    alpha[c] = mean over (i, j) of dS/dA[c, i, j]            one weight per channel
    cam[i, j] = ReLU(sum over c of alpha[c] * A[c, i, j])    then scaled up to the input's size
the backward only as far as A. A is the output of one stage of the model's trunk (InceptionNet's
STAGES): by default the last Inception block, whose 7x7 (V2 at 224) or 8x8 (V3 at 299) grid is
the last the classifier sees before pooling (on small inputs, the last block with at least 2x2).
"""
import numpy as np

import nn
from data.transforms import interpolation_matrix


def last_block(model, x=None):
    """The default layer of Grad-CAM: the last Inception block of the model's trunk or, for
    inputs like x, the last whose map is at least 2x2 (small inputs end in 1x1 maps, which have
    no "where": V2 at 32x32 ends in 1x1 from inception_4e on)."""
    blocks = [s for s in model.STAGES if s.startswith("inception_")]
    if x is None:
        return blocks[-1]
    model.eval()
    a, wide = np.zeros_like(x[:1]), []
    with nn.no_grad():
        for name in model.STAGES:
            a = getattr(model, name)(a)
            if name in blocks and min(a.shape[2:]) >= 2:
                wide.append(name)
            if name == blocks[-1]:
                break
    return wide[-1] if wide else blocks[-1]


def _one_hot(logits, target):
    d = np.zeros_like(logits)
    d[np.arange(len(logits)), np.broadcast_to(target, len(logits))] = 1
    return d


def class_scores(model, x, target):
    """The scores S = logits[n, target[n]] of an eval-mode forward (the model is left in eval)."""
    model.eval()
    logits = model(x)
    return logits[np.arange(len(x)), np.broadcast_to(target, len(x))]


def saliency(model, x, target):
    """|dS/dx| maxed over the input channels: (N, H, W), for S the score of class `target`
    (one class for the batch, or one per image)."""
    model.eval()
    logits = model(x)
    needed, model.input_grad = model.input_grad, True   # (a model in training skips dx)
    try:
        dx = model.backward(_one_hot(logits, target))
    finally:
        model.input_grad = needed
    return np.abs(dx).max(axis=1)


def grad_cam(model, x, target, stage=None):
    """Grad-CAM of class `target` on the output A of the trunk stage `stage` (default:
    last_block(model, x)). Returns (cam (N, H, W) at the input's size in [0, 1], alpha (N, C),
    A (N, C, h, w)). The forward runs the trunk's stages in order, keeping A; the backward runs
    them in reverse as far as A."""
    stage = stage or last_block(model, x)
    model.eval()
    a = x
    for name in model.STAGES:
        a = getattr(model, name)(a)
        if name == stage:
            A = a
    d = _one_hot(a, target)
    for name in reversed(model.STAGES):
        if name == stage:
            break
        d = getattr(model, name).backward(d)
    alpha = d.mean(axis=(2, 3))                                       # (N, C)
    cam = np.maximum(np.einsum("nc,nchw->nhw", alpha, A), 0)
    rows = interpolation_matrix(cam.shape[1], x.shape[2], cam.dtype)     # bilinear, as the data
    cols = interpolation_matrix(cam.shape[2], x.shape[3], cam.dtype)     # pipeline resizes digits
    cam = rows @ cam @ cols.T
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0), alpha, A


def stage_output(model, x, stage):
    """The output of one trunk stage for input x (eval mode): what Grad-CAM calls A."""
    model.eval()
    with nn.no_grad():
        for name in model.STAGES:
            x = getattr(model, name)(x)
            if name == stage:
                return x
    raise ValueError(f"{type(model).__name__} has no stage {stage!r}; its stages: {', '.join(model.STAGES)}")


def logits_from(model, stage, A):
    """The logits the trunk computes from `stage`'s output A (eval mode): the function whose
    gradient Grad-CAM takes."""
    model.eval()
    with nn.no_grad():
        for name in model.STAGES[model.STAGES.index(stage) + 1:]:
            A = getattr(model, name)(A)
    return A
