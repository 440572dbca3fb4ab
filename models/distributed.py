"""Data-parallel training over MPI: every rank computes gradients on its shard of the batch, one
Allreduce sums them, every rank takes the same optimizer step.

    mpiexec -n 2 python -m models.train --distributed            # (pip install -e ".[mpi]")

How a step runs on N ranks, with a global batch of B images (-b B):
- data: every rank draws the same seeded permutation of the training set each epoch (the one a
  single process draws); global batch b is images b*B .. (b+1)*B - 1 of it, and rank r takes
  the r-th of its N equal parts (B/N images). Every image is seen once per epoch, as with one
  process;
- each rank runs forward and backward on its part: its loss is the mean over its B/N images;
- GradientSum keeps every parameter's gradient in one flat buffer (each p.grad a view of it),
  sums it over the ranks in place with a single Allreduce and divides by N: the gradient of the
  mean loss over the whole batch. Every rank then takes the same optimizer step on the same numbers, so the
  weights stay identical everywhere without ever being sent;
- batch norm: by default each rank normalises with its own part's statistics (B/N images), and
  the running statistics are averaged over the ranks at the end of each epoch; with --sync-bn
  every BatchNorm2d is a nn.SyncBatchNorm2d, which all-sums its per-channel sums so that every
  rank normalises with the statistics of the whole batch, forward and backward: N ranks with
  B/N images each then compute what one process with B images computes;
- evaluation: each rank evaluates every N-th image; losses and confusion matrices are summed;
- rank 0 alone writes the checkpoints, history, plots and report, and prints the progress. A
  checkpoint also holds what differs between ranks (each one's dropout generators and, without
  --sync-bn, its running statistics within an epoch), so that N ranks resume exactly.

What MPI promises: the standard recommends, without requiring it, that Allreduce return the
same sum on every rank (MPICH and Open MPI do; each checkpoint checks that the weights agree).
What it does not: the order in which it adds the ranks' values, which may change with the number
of ranks, the message size and the MPI library, and floating-point sums depend on their order. With two ranks there
is one order (a + b = b + a, exactly); for more, --fixed-reduction-order sums the buffers in rank
order after an Allgather (N times the bytes of an Allreduce), so that a run is repeatable
bit for bit on any MPI.

Without mpi4py the rest of the library works as always, and --distributed says how to install it.
docs/distributed.md: running on one machine and on a cluster, and the measured scaling.
"""
import hashlib
import os
import pickle
import sys
import traceback

import numpy as np

import nn

INSTALL = 'pip install -e ".[mpi]"   (mpi4py, and the MPICH library from PyPI)'
# Set in every process by the launchers: mpiexec of MPICH, Open MPI and MVAPICH, Slurm's srun
# (PMI or PMIx). Not SLURM_NTASKS: a batch script's plain `python` has it too.
_LAUNCHER_SIZES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE")


class RanksDisagree(RuntimeError):
    """The ranks' weights are no longer the same bits (an MPI whose Allreduce gave the ranks
    different sums): the message says to use --fixed-reduction-order."""


class World:
    """The ranks of a run, and the few collective operations training needs. World() is one
    process on its own: every operation is then the plain one (a sum returns its input)."""

    def __init__(self, comm=None, local_size=1, mpi=None):
        self.comm, self.local_size, self.mpi, self.fixed_order = comm, local_size, mpi, False
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1

    @property
    def is_root(self):
        return self.rank == 0

    def sum(self, array, in_place=False):
        """The array summed over the ranks: a new float array, or (in_place) written into the
        array itself, which must then be a contiguous float array."""
        if not in_place:
            array = np.array(array, dtype=np.result_type(array, np.float32), order="C")
        if self.size == 1:
            return array
        if self.fixed_order:   # every rank adds the same values in the same order: the same bits
            parts = np.empty((self.size,) + array.shape, array.dtype)
            self.comm.Allgather(array, parts)
            array[...] = parts[0]
            for part in parts[1:]:
                array += part
            return array
        self.comm.Allreduce(self.mpi.IN_PLACE, array)
        return array

    def any(self, flag):
        """True on every rank when it is True on any (a Ctrl-C that reached one rank first)."""
        return bool(self.sum(np.array([float(flag)]))[0]) if self.size > 1 else bool(flag)

    def gather(self, obj):
        """Every rank's object, in rank order, on rank 0 (None elsewhere)."""
        return self.comm.gather(obj, root=0) if self.size > 1 else [obj]

    def together(self, fn, share=False):
        """fn() on every rank; if it raises on any, the same error (the lowest such rank's) is
        raised on all of them, so that no rank goes on to wait for one that has stopped.
        share=True: every rank gets rank 0's result."""
        if self.size == 1:
            return fn()
        try:
            result, error = fn(), None
        except Exception as err:   # noqa: BLE001 - handed to every rank, then raised
            result, error = None, err
        errors = self.comm.allgather(None if error is None else _portable(error))
        failed = next((r for r, e in enumerate(errors) if e is not None), None)
        if failed is not None:
            raise (error if failed == self.rank else errors[failed])
        return self.comm.bcast(result if self.is_root else None, root=0) if share else result

    def root_does(self, fn, share=False):
        """fn() on rank 0 alone (writing the run's files, reading a checkpoint), as together()."""
        return self.together(fn if self.is_root else (lambda: None), share)

    def root_first(self, fn):
        """fn() on rank 0, then on the others (files that rank 0 downloads or compiles once)."""
        first = self.root_does(fn)
        later = self.together((lambda: None) if self.is_root else fn)
        return first if self.is_root else later

    def abort(self, code):
        """Stop every rank (an error that only this one met: the others would wait forever)."""
        if self.size > 1:
            self.comm.Abort(code)


def _portable(error):
    """The error itself if it can be sent to the other ranks (pickled), else a RuntimeError
    that says the same."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:   # noqa: BLE001 - any error class that does not survive pickling
        return RuntimeError(f"{type(error).__name__}: {error}")


def launched_by_mpi():
    """Whether this process was started by an MPI launcher among several (mpiexec, srun)."""
    sizes = [os.environ.get(v, "") for v in _LAUNCHER_SIZES]
    return any(s.isdigit() and int(s) > 1 for s in sizes)


def connect(distributed=False):
    """The World of this run: MPI's when asked (or when started by mpiexec -n N, N > 1), else
    one process. A clear error when MPI is wanted but mpi4py is not installed."""
    if not (distributed or launched_by_mpi()):
        return World()
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise RuntimeError(f"--distributed needs mpi4py and an MPI library ({err}): {INSTALL}") from None
    local_size = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
    world = World(MPI.COMM_WORLD, local_size, MPI)
    if world.size > 1:
        _share_the_cores(local_size)
    return world


def _share_the_cores(local_size):
    """Ranks on one machine share its cores: each gets cores / ranks-on-this-machine threads
    for its Numba kernels and its BLAS, unless the user set NUMBA_NUM_THREADS, OMP_NUM_THREADS
    or OPENBLAS_NUM_THREADS."""
    if any(v in os.environ for v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")):
        return
    from nn import runtime
    runtime.set_threads(max(1, (os.cpu_count() or 1) // local_size))


def abort_on_error(world, code=1):
    """Print the traceback of an error that escaped (naming the rank) and stop every rank:
    errors that every rank meets together are handled before they get here."""
    sys.stderr.write(f"rank {world.rank} of {world.size}: " + traceback.format_exc())
    sys.stderr.flush()
    world.abort(code)


class GradientSum:
    """Sums every parameter's gradient over the ranks with one Allreduce of one flat buffer,
    then divides by the number of ranks (the gradient of the mean loss of the whole batch).

    The gradients live in that buffer: each p.grad becomes a view of its stretch of it, so that
    backward writes straight into what is sent, and the sum comes back in place (packing them
    into a buffer and out again costs 30 ms per step for Inception-V3's 100 MB on this machine,
    against 40 ms for the Allreduce itself: docs/distributed.md)."""

    def __init__(self, params, world):
        self.params, self.world = list(params), world
        dtype = self.params[0].grad.dtype if self.params else np.float32
        self.flat = np.zeros(sum(p.grad.size for p in self.params), dtype)
        self.views, offset = [], 0
        for p in self.params:
            view = self.flat[offset:offset + p.grad.size].reshape(p.grad.shape)
            view[...] = p.grad
            p.grad = view
            self.views.append(view)
            offset += p.grad.size

    def __call__(self):
        if self.world.size == 1:
            return
        if any(p.grad is not view for p, view in zip(self.params, self.views)):
            raise RuntimeError("GradientSum: a parameter's .grad was replaced by another array after "
                               "GradientSum was made (by Module.to?): make it after the model's last cast")
        self.world.sum(self.flat, in_place=True)
        self.flat /= self.world.size


def average_running_statistics(model, world):
    """Each BatchNorm's running mean and variance averaged over the ranks (end of an epoch)."""
    if world.size == 1:
        return
    buffers = [b for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var"))]
    flat = world.sum(np.concatenate([b.data.ravel() for b in buffers])) / world.size
    offset = 0
    for b in buffers:
        b.data[...] = flat[offset:offset + b.data.size].reshape(b.data.shape)
        offset += b.data.size


def check_same_weights(model, world):
    """Raise RanksDisagree unless every rank holds the same bits in every parameter (checked
    when a checkpoint is saved: a digest of 100 MB takes a fraction of a second)."""
    if world.size == 1:
        return
    digest = hashlib.blake2b(digest_size=16)
    for p in model.parameters():
        digest.update(p.data)
    digests = world.comm.allgather(digest.hexdigest())
    if len(set(digests)) > 1:
        raise RanksDisagree(
            f"the {world.size} ranks no longer hold the same weights: this MPI's Allreduce did not "
            "give every rank the same sum. Resume the last checkpoint with --fixed-reduction-order, "
            "which sums in rank order on every rank")


def rank_state(model):
    """What differs between ranks and must be saved for each: dropout generators' states and
    the batch-norm running statistics."""
    return {"dropout": {name: m.rng.bit_generator.state for name, m in model.named_modules()
                        if isinstance(m, nn.Dropout)},
            "running": {name: b.data.tolist() for name, b in model.named_buffers()
                        if name.endswith(("running_mean", "running_var"))}}


def restore_rank_state(model, state):
    modules = dict(model.named_modules())
    for name, rng_state in state["dropout"].items():
        modules[name].rng.bit_generator.state = rng_state
    buffers = dict(model.named_buffers())
    for name, values in state["running"].items():
        buffers[name].data[...] = np.asarray(values, buffers[name].data.dtype)
