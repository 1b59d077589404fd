"""Times IREE's kernels (LayerNorm and RMSNorm, backward and forward)
against torch eager, torch.compile, Liger-Kernel (and NumPy on CPUs), all in
one run: `lnbwd-iree bench`.

Method (the same for every implementation): each one's outputs are first
checked against the float64 reference on the shape (outputs poisoned with
NaN before that call); one that is wrong is reported and not timed. Inputs
are on the device before timing. Each implementation gets its own copies of
the per-call row inputs (dY and X for the backward, X for the forward), as
many sets as make them together exceed twice the L2 cache, and the calls
rotate among them, so no call finds its inputs in cache from the last.
After a warm-up of each, a trial queues back-to-back calls (at least one per
set) and synchronises once; time per call = trial wall time / calls; the
implementations of a case take turns trial by trial; the reported time is
the median over trials. The copy bandwidth is measured in the same run.
GB/s counts the bytes that must move (``bytes_moved``).

Modules: ``cases`` (what is timed: the registry's kernels, bytes moved),
``inputs`` (random inputs, drawn once), ``timing``, ``peers`` (the
implementations), ``runner`` (the orchestration: `run`), ``report`` (JSON, markdown, PNG)."""

from . import inputs, report
from .cases import EPS, NORM_OPS, TIMED_OPS, Case, TimedOp, bytes_moved
from .inputs import make_inputs, parse_shape
from .peers import IMPLS, IREE_IMPLS, default_impls
from .report import markdown, report_paths, write_report
from .runner import Bench, limit_cpu_threads, run
from .timing import L2_BYTES_DEFAULT, input_sets, time_calls, time_interleaved

__all__ = ["EPS", "IMPLS", "IREE_IMPLS", "L2_BYTES_DEFAULT", "NORM_OPS", "TIMED_OPS", "Bench", "Case", "TimedOp",
           "bytes_moved", "default_impls", "input_sets", "limit_cpu_threads", "make_inputs", "markdown", "parse_shape",
           "report_paths", "run", "time_calls", "time_interleaved", "write_report"]
