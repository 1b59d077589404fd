"""lnbwd-iree: LayerNorm and RMSNorm forward and backward as linalg MLIR, compiled by IREE."""

import logging as _logging
import sys as _sys


class _StderrUntilConfigured(_logging.StreamHandler):
    """Shows lnbwd_iree's messages (one line per artifact compiled, compiler
    warnings) on stderr while the application has not configured logging;
    once the root logger has a handler, that handler receives them instead."""

    def emit(self, record):
        if not _logging.getLogger().handlers:
            self.stream = _sys.stderr  # the current one, which tests and the CLI may have replaced
            super().emit(record)


_log = _logging.getLogger("lnbwd_iree")
if not _log.handlers:
    _handler = _StderrUntilConfigured()
    _handler.setFormatter(_logging.Formatter("lnbwd-iree: %(message)s"))
    _log.addHandler(_handler)
    _log.setLevel(_logging.INFO)

from .api import kernels_for, layernorm_backward, layernorm_forward, rmsnorm_backward, rmsnorm_forward  # noqa: E402
from .runtime import LayerNormKernels  # noqa: E402

__all__ = [
    "LayerNormKernels", "kernels_for", "layernorm_backward", "layernorm_forward", "rmsnorm_backward", "rmsnorm_forward",
]
