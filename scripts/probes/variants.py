"""Kernel variants for the probes, through the op seam: a registered kernel
whose design (``Kernel.design``, ``Kernel.library``) is an op's
``*_fields`` / ``*_library_for`` function at a chosen schedule. Each variant
is built into a folder of its own (its artifact has the registered kernel's
name) and run from there by a ``LayerNormKernels`` of its own (plans are
cached by entry name)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lnbwd_iree.cache import ArtifactStore
from lnbwd_iree.runtime import LayerNormKernels
from lnbwd_iree.specialization import Kernel, Specialization
from lnbwd_iree.targets import Target


def variant(kernel: Kernel, design, library=None, per_n: bool | None = None) -> Kernel:
    """``kernel`` with ``design`` (and ``library``, None for none) as its
    design rules; ``per_n`` overrides whether one artifact serves every M."""
    return dataclasses.replace(kernel, design=design, library=library,
                               per_n=kernel.per_n if per_n is None else per_n)


def build(kernel: Kernel, dtype: str, m: int, n: int, target: Target, folder: Path) -> Path:
    """Compiles the artifact that serves ``kernel`` at [m, n] into ``folder`` (with its record and plan)."""
    folder.mkdir(parents=True, exist_ok=True)
    return ArtifactStore.build(Specialization.serving(kernel, dtype, m, n), target, folder)


def open_variant(folder: Path, driver: str = "cuda") -> LayerNormKernels:
    """Kernels that load the artifacts in ``folder`` (and refuse any other
    where no compiler is installed)."""
    return LayerNormKernels(driver, artifact_dir=folder, static_shapes=True)
