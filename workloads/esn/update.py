"""The leaky-integrator ESN update, once for every reservoir engine of the lab's workloads:

    x <- (1 - leak) x + leak tanh(pre),   computed in place as   x += leak (tanh(pre) - x)

``pre`` is the pre-activation (W x + W_in u + b [+ W_fb y]) and is overwritten; ``x`` is updated in place.
Works on numpy arrays and on torch tensors alike (``tanh``: ``np.tanh`` or ``torch.tanh``); the order of
the operations is the reference's, so results are bit-identical across engines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def leaky_update_(x: Any, pre: Any, leak: Any, tanh: Callable[..., Any] = np.tanh) -> None:
    tanh(pre, out=pre)
    pre -= x
    pre *= leak
    x += pre
