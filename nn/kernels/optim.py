"""Numba twin of nn/optim.py's Adam step: p, m, v (and vmax) read and written once, in one pass
over memory, where the NumPy reference takes a pass per operation."""
import numpy as np
from numba import njit, prange

from nn.optim import adam_step_reference

from . import twin_of


@twin_of(adam_step_reference)
@njit(parallel=True, cache=True)
def adam_step_numba(p, g, m, v, vmax, beta1, one_minus_beta1, beta2, one_minus_beta2, eps,
                    decay, l2, step_size, bias2):
    """p, m and v (and vmax, for amsgrad; else an empty array) take one Adam step in place"""
    n = p.size
    # one view per statement: unpacked from one tuple, these views lost the loop's writes
    # (Numba 0.68 compiled a loop that left p, m and v unchanged)
    pf = p.reshape(n)
    gf = g.reshape(n)
    mf = m.reshape(n)
    vf = v.reshape(n)
    top = vmax.reshape(vmax.size)
    amsgrad = vmax.size > 0
    for i in prange(n):  # the reference's operations, in its order and its dtype
        pi = pf[i] * decay
        gi = gf[i] + l2 * pi
        mi = mf[i] * beta1 + one_minus_beta1 * gi
        vi = vf[i] * beta2 + one_minus_beta2 * gi * gi
        mf[i] = mi
        vf[i] = vi
        if amsgrad:
            if vi > top[i] or vi != vi:   # np.maximum: the larger, NaN if either is
                top[i] = vi
            vi = top[i]
        pf[i] = pi - step_size * mi / (np.sqrt(vi) / bias2 + eps)
