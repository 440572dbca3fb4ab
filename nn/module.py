"""Parameter, Buffer, Module and the two containers every Inception network is built from.

A Module owns Parameters (trained), Buffers (saved but not trained, e.g. batch-norm running
statistics) and child Modules, all registered simply by assigning them as attributes, in the
order they are assigned. That order is the order of `named_parameters()` and `state_dict()`,
and the names are the attribute paths, exactly as in PyTorch: "inception_3a.b3x3.0.conv.weight".

The contract every layer keeps:
    forward(x)     returns y and keeps in self.cache exactly what backward needs
    backward(dout) returns dx = dL/dx and ADDS dL/dp into p.grad for each of its parameters
There is no autograd: a model's backward is its forward read in reverse.

The checks every layer shares live here, once: calling a module (`module(x)`, which runs
forward) refuses an input that is not a floating NumPy array or holds an empty batch
(check_inputs; a layer adds its own, such as the channel count), and remembers the shape and
dtype of what forward returned; backward then refuses a dout that does not have them (a dout
of another shape would otherwise broadcast silently in an element-wise layer).

Evaluating needs no backward, and the caches of a whole network are most of its memory
(Inception-V3 at 299x299, batch 8: 1.4 GB). Inside `with nn.no_grad():` (PyTorch's name) every
module drops its cache as soon as its forward returns, so only one layer's is alive at a time:
two eval-mode forwards of that model at batch 32 peaked at 7.5 GB without it, 2.3 GB with it.
"""
import functools
import inspect
import numbers
from collections import OrderedDict, namedtuple

import numpy as np

from . import runtime


_keep_caches = True   # False inside `with no_grad():`
_prepared = False     # whether runtime.prepare() has run: the first layer call does it


def _prepare_process():
    """Thread and memory settings for speed, once per process, at the first layer call (nn/runtime.py)."""
    global _prepared
    runtime.prepare()
    _prepared = True


class no_grad:
    """`with nn.no_grad(): y = model(x)`: forward only; nothing is kept for backward."""

    def __enter__(self):
        global _keep_caches
        self._outer, _keep_caches = _keep_caches, False
        return self

    def __exit__(self, *exc):
        global _keep_caches
        _keep_caches = self._outer
        return False


class Parameter:
    """A trainable array and the gradient accumulated into it (same shape, starts at zero)."""

    def __init__(self, data):
        self.data = np.array(data, order="C")
        self.grad = np.zeros_like(self.data)

    @property
    def shape(self):
        return self.data.shape

    @property
    def size(self):
        return self.data.size

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Buffer:
    """An array saved in state_dict but never trained (running statistics, counters)."""

    def __init__(self, data):
        self.data = np.array(data, order="C")

    @property
    def shape(self):
        return self.data.shape

    def __repr__(self):
        return f"Buffer(shape={self.data.shape}, dtype={self.data.dtype})"


Output = namedtuple("Output", "shape dtype")


def _spec(out):
    """What backward's dout must look like, from what forward returned: an Output (shape, dtype)
    for an array, a plain tuple of those for several outputs (None where an output is None),
    "scalar" for a number (a loss)."""
    if isinstance(out, np.ndarray):
        return Output(out.shape, out.dtype)
    if type(out) is tuple:
        return tuple(_spec(o) for o in out)
    return None if out is None else "scalar"


def _check_dout(module, spec, dout, label, outputs=1):
    what = f"{module._describe()}.backward: {label}"
    if spec == "scalar":
        if not isinstance(dout, numbers.Real):
            raise TypeError(f"{what} must be a number (forward returned one), got {type(dout).__name__}")
        return
    shape, dtype = spec
    if not isinstance(dout, np.ndarray):
        hint = ("; pass one gradient per output of forward, as separate arguments"
                if outputs > 1 and isinstance(dout, (list, tuple)) else "")
        raise TypeError(f"{what} must be a NumPy array of shape {shape}, got {type(dout).__name__}{hint}")
    if dout.shape != shape:
        raise ValueError(f"{what} has shape {dout.shape}, but forward returned shape {shape}")
    if dout.dtype != dtype:
        raise ValueError(f"{what} is {dout.dtype}, but forward returned {dtype}; "
                         f"pass it as .astype(np.{dtype})")


def _check_douts(module, spec, douts):
    """douts against the spec of the last forward's output (one dout per output)."""
    specs = spec if type(spec) is tuple else (spec,)
    if len(douts) > len(specs):
        raise TypeError(f"{module._describe()}.backward: got {len(douts)} gradients for the "
                        f"{len(specs)} output(s) of the last forward; pass one per output, as "
                        "separate arguments")
    for i, (s, d) in enumerate(zip(specs, douts)):
        label = "dout" if len(specs) == 1 else f"the gradient of output {i + 1} of {len(specs)}"
        if d is None or s is None:
            if s is None and d is not None:
                raise ValueError(f"{module._describe()}.backward: {label} was given, but forward "
                                 "returned None there")
            if i == 0 and d is None:
                raise TypeError(f"{module._describe()}.backward: {label} is required")
            continue
        _check_dout(module, s, d, label, len(specs))


def _checking_douts(backward):
    """backward, preceded by the check of its douts against the last forward's output."""
    names = list(inspect.signature(backward).parameters)[1:]   # for douts given by name

    @functools.wraps(backward)
    def checked(self, *douts, **named):
        spec = self.__dict__.get("_output_spec")
        if spec is not None:
            given = list(douts) + [named.get(n) for n in names[len(douts):]]
            while given and given[-1] is None:
                given.pop()
            _check_douts(self, spec, given)
        return backward(self, *douts, **named)
    return checked


class Module:
    """Base class: registration of parameters/buffers/children, modes, state_dict, casting."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "backward" in cls.__dict__:   # every layer's backward checks its douts (see the top)
            cls.backward = _checking_douts(cls.__dict__["backward"])

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "cache", None)

    # -- registration: plain attribute assignment, remembered in definition order ------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(
                f"{type(self).__name__}: call super().__init__() before assigning attributes")
        target = (self._parameters if isinstance(value, Parameter) else self._buffers if isinstance(value, Buffer)
                  else self._modules if isinstance(value, Module) else None)
        for registry in (self._parameters, self._buffers, self._modules):
            if registry is not target:
                registry.pop(name, None)
        if target is not None:
            target[name] = value   # a replaced member keeps its place (a Sequential's order)
        object.__setattr__(self, name, value)

    # -- the layer interface -----------------------------------------------------------------
    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, *douts):
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    def __call__(self, *inputs):
        if not _prepared:
            _prepare_process()
        self.check_inputs(*inputs)
        out = self.forward(*inputs)
        object.__setattr__(self, "_output_spec", _spec(out))
        if not _keep_caches:
            self.cache = None
        return out

    def check_inputs(self, x, *rest):
        """What every layer needs of its input: a floating NumPy array with a non-empty batch.
        (Layers check their own layout, channels and dtype on top.)"""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{self._describe()}: expected a NumPy array, got {type(x).__name__}; "
                            "convert it with np.asarray(x, dtype=np.float32)")
        if x.dtype.kind != "f":
            raise ValueError(f"{self._describe()}: expected a floating-point input (float32 or "
                             f"float64), got dtype {x.dtype}")
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(f"{self._describe()}: got an empty batch (input shape {x.shape}); "
                             "give at least one sample")

    def saved(self):
        """The cache forward left for backward; a clear error if forward has not run yet."""
        if self.cache is None:
            raise RuntimeError(f"{self._describe()}.backward called before forward: "
                               "run forward on a batch first (outside nn.no_grad(), which "
                               "keeps nothing for backward)")
        return self.cache

    def _describe(self):
        return type(self).__name__

    # -- modes -------------------------------------------------------------------------------
    def train(self, mode=True):
        """Set training mode on this module and every descendant; eval() is train(False)."""
        object.__setattr__(self, "training", bool(mode))
        for child in self._modules.values():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    # -- traversal ---------------------------------------------------------------------------
    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def _named_members(self, prefix=""):
        """Every Parameter and Buffer of the tree, named by its attribute path: this module's
        parameters, then its buffers, then each child's, in definition order (PyTorch's order).
        The one traversal the methods below filter."""
        for registry in (self._parameters, self._buffers):
            for name, t in registry.items():
                yield (f"{prefix}.{name}" if prefix else name), t
        for name, child in self._modules.items():
            yield from child._named_members(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, prefix=""):
        return ((n, t) for n, t in self._named_members(prefix) if isinstance(t, Parameter))

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        return ((n, t) for n, t in self._named_members(prefix) if isinstance(t, Buffer))

    def num_parameters(self):
        return sum(p.size for p in self.parameters())

    def zero_grad(self):
        for p in self.parameters():
            p.grad[...] = 0

    # -- state -------------------------------------------------------------------------------
    def state_dict(self):
        """An ordered name -> array copy of every Parameter and Buffer."""
        return OrderedDict((name, t.data.copy()) for name, t in self._named_members())

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into this module's Parameters and Buffers (kept in their own dtype).

        strict=True (the default) refuses missing or unexpected keys (RuntimeError, as
        PyTorch); a shape mismatch or a value that cannot be cast to the entry's dtype is always
        refused (ValueError). Nothing is changed unless every check passes.
        """
        own = OrderedDict(self._named_members())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            lines = [f"{type(self).__name__}.load_state_dict: the state does not match the model"]
            for what, keys in (("missing", missing), ("unexpected", unexpected)):
                if keys:
                    lines.append(f"  {what} keys ({len(keys)}): {', '.join(keys[:10])}"
                                 + (" ..." if len(keys) > 10 else ""))
            raise RuntimeError("\n".join(lines))
        staged = {}
        for name, t in own.items():
            if name not in state_dict:
                continue
            value = np.asarray(state_dict[name])
            problem = None
            if value.shape != t.data.shape:
                problem = f"has shape {value.shape}, the model expects {t.data.shape}"
            elif not np.can_cast(value.dtype, t.data.dtype, casting="same_kind"):
                problem = f"holds {value.dtype} values, which do not convert to {t.data.dtype}"
            if problem:
                raise ValueError(f"{type(self).__name__}.load_state_dict: '{name}' {problem}")
            staged[name] = value
        for name, value in staged.items():
            own[name].data[...] = value
        return self

    # -- dtype -------------------------------------------------------------------------------
    def to(self, dtype):
        """Cast every floating Parameter and Buffer (and its grad) to `dtype`, in place."""
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise ValueError(f"{type(self).__name__}.to: expected a floating dtype, got {dtype}")
        for _, t in self._named_members():
            if t.data.dtype.kind == "f":
                t.data = t.data.astype(dtype)
                if isinstance(t, Parameter):
                    t.grad = t.grad.astype(dtype)
        for m in self.modules():
            object.__setattr__(m, "cache", None)
        return self

    def double(self):
        return self.to(np.float64)

    def float(self):
        return self.to(np.float32)

    @property
    def dtype(self):
        """The dtype of this module's first parameter (None for parameter-free modules)."""
        for p in self.parameters():
            return p.data.dtype
        return None

    # -- printing ----------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not self._modules:
            return head + ")"
        lines = [head]
        for name, child in self._modules.items():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied one after the other; children are named "0", "1", ... (or by an OrderedDict)."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            items = modules[0].items()
        else:
            items = ((str(i), m) for i, m in enumerate(modules))
        for name, m in items:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: child '{name}' is a {type(m).__name__}, "
                                "expected a Module")
            setattr(self, name, m)

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def backward(self, dout):
        for m in reversed(self._modules.values()):
            dout = m.backward(dout)
        return dout


class Concat(Module):
    """Parallel branches on the same input, outputs concatenated on channels (axis 1).

    The shape of every Inception block. Branches run in the order they are given (the order of
    their parameters); `order` (branch names) sets a different concatenation order, e.g. an
    Inception block that runs its 3x3 branch first but puts its 1x1 branch first in the output.
    A fork in forward is a sum in backward: the upstream gradient is split by the branches'
    output widths and the branches' input gradients add up.
    Shapes: x (N, C, H, W) -> y (N, sum(C_b), H', W').   Cache: each branch's output width.
    """

    def __init__(self, *branches, order=None):
        super().__init__()
        if len(branches) == 1 and isinstance(branches[0], OrderedDict):
            items = branches[0].items()
        else:
            items = ((str(i), b) for i, b in enumerate(branches))
        for name, b in items:
            setattr(self, name, b)
        if not self._modules:
            raise ValueError("Concat: expected at least one branch")
        self.order = list(order) if order is not None else list(self._modules)
        if sorted(self.order) != sorted(self._modules):
            raise ValueError(f"Concat: order {self.order} must name each branch "
                             f"{list(self._modules)} once")

    @property
    def branches(self):
        return list(self._modules.values())

    def forward(self, x):
        outs = {name: b(x) for name, b in self._modules.items()}
        spatial = {o.shape[2:] for o in outs.values()}
        if len(spatial) != 1:
            sizes = ", ".join(f"{n}: {o.shape}" for n, o in outs.items())
            raise ValueError(f"Concat: branch outputs differ in spatial size ({sizes})")
        self.cache = {"widths": [outs[name].shape[1] for name in self.order]}
        return np.concatenate([outs[name] for name in self.order], axis=1)

    def backward(self, dout):
        widths = self.saved()["widths"]
        pieces = dict(zip(self.order, np.split(dout, np.cumsum(widths)[:-1], axis=1)))
        return sum(b.backward(np.ascontiguousarray(pieces[name]))
                   for name, b in reversed(self._modules.items()))
