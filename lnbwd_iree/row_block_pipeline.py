"""The codegen pass pipeline of the one-pass backward's row-block dispatch.

IREE 3.13's VectorDistribute pipeline, pass for pass as it builds it for
CUDA and ROCm (printed with --mlir-print-ir-after-all), with two additions:

* ``iree-codegen-lowering-config-interpreter`` first. A dispatch whose
  translation_info names a textual pipeline gets the first op's lowering
  config copied onto every op (IREE treats it as a legacy pipeline), so the
  partial-sums op's config names a transform strategy
  (``row_block_configs.mlir``) that puts each op's own config back.
* ``iree-codegen-forall-to-for`` right after the ``serial`` tiling level.
  That level tiles the block's row loop as an ``scf.forall``; as an
  ``scf.for`` the block's partial column sums become loop-carried values,
  which vectorisation's subset hoisting turns into vector iter_args and
  VectorDistribute into registers: each row step no longer reads and writes
  the partials in memory.

Two passes of the built-in list are left out because a textual pipeline is
verified against builtin.module, where they cannot be added:
``affine-loop-coalescing`` (func.func only; it has no nested loops to
coalesce here) and ``fold-tensor-subset-ops`` (not registered by name in
iree-compile)."""

from __future__ import annotations

_CANONICALIZE = ("iree-codegen-config-tracking-canonicalize", "cse")

PASSES: tuple[str, ...] = (
    "iree-codegen-lowering-config-interpreter",
    "iree-codegen-tile-and-distribute-to-workgroups-using-forall-op",
    *_CANONICALIZE,
    *_CANONICALIZE,
    "iree-codegen-gpu-promote-matmul-operands{skip-operand-promotion=true}",
    "iree-codegen-gpu-apply-tiling-level{allow-zero-slices=true fuse-consumers=true normalize-loops=false tiling-level=reduction}",
    *_CANONICALIZE,
    "iree-codegen-gpu-apply-padding-level{tiling-level=partial_reduction}",
    "iree-codegen-gpu-pack-partial-reductions",
    "iree-codegen-gpu-apply-tiling-level{allow-zero-slices=true fuse-consumers=true normalize-loops=false tiling-level=partial_reduction}",
    *_CANONICALIZE,
    "resolve-shaped-type-result-dims",
    "affine-simplify-min-max",
    "reify-result-shapes",
    *_CANONICALIZE,
    *_CANONICALIZE,
    "iree-codegen-gpu-apply-tiling-level{allow-zero-slices=true fuse-consumers=true normalize-loops=false tiling-level=serial}",
    *_CANONICALIZE,
    "iree-codegen-forall-to-for",
    *_CANONICALIZE,
    "iree-linalg-ext-decompose-attention{use-exp2=true}",
    *_CANONICALIZE,
    "iree-codegen-gpu-tile-and-convert-conv-to-matmul",
    "iree-codegen-gpu-decompose-horizontally-fused-gemms",
    "iree-llvmgpu-configure-tensor-layouts",
    "iree-codegen-gpu-pack-to-intrinsics",
    "iree-loop-invariant-code-motion",
    "canonicalize",
    "cse",
    "iree-codegen-optimize-tensor-insert-extract-slices{fold-identity-slices=false}",
    "iree-codegen-decompose-convolution-to-lower-dim-ops",
    "canonicalize",
    "cse",
    "iree-codegen-materialize-vector-tile-sizes",
    "iree-codegen-generic-vectorization{enable-cleanup=false enable-vector-masking=true fold-cast-into-contract=true "
    "generate-contract=true max-vector-size=2147483647 use-configured-vector-sizes=true vectorize-copies=true "
    "vectorize-map-store=true vectorize-to-transfer-gather=false}",
    "iree-linalg-ext-decompose-im2col",
    "canonicalize",
    "cse",
    # Subset hoisting: the partials' vector.transfer_read/write pair leaves the row loop.
    "iree-codegen-optimize-tensor-insert-extract-slices{fold-identity-slices=false}",
    "canonicalize",
    "cse",
    "iree-codegen-materialize-vector-masking{decompose-masks=true}",
    "iree-codegen-gpu-vector-alloc",
    "canonicalize",
    "cse",
    "iree-codegen-gpu-combine-value-semantic-barriers",
    "iree-eliminate-empty-tensors",
    "empty-tensor-to-alloc-tensor",
    "iree-codegen-gpu-infer-memory-space",
    "iree-rocdl-configure-buffer-instructions",
    "iree-codegen-gpu-bubble-resource-casts",
    "iree-codegen-gpu-alloc-private-memory-for-dps-ops",
    "iree-codegen-iree-comprehensive-bufferize",
    "iree-codegen-inject-assume-alignment",
    "resolve-shaped-type-result-dims",
    "iree-codegen-canonicalize",
    "cse",
    "iree-codegen-canonicalize",
    "iree-codegen-cleanup-buffer-alloc-view",
    "iree-rocdl-buffer-instructions-optimization",
    "canonicalize",
    "cse",
    "iree-codegen-amdgpu-lower-coalesced-dma-to-gather-lds",
    "canonicalize",
    "cse",
    "iree-codegen-hoist-statically-bound-allocations",
    "iree-llvmgpu-vector-distribute",
    "iree-linalg-ext-decompose-map-store",
    "iree-codegen-hoist-inner-tiled-acc-reshapes",
    "iree-gpu-unroll-to-intrinsics",
    "iree-gpu-lower-ops",
    "canonicalize",
    "cse",
    "iree-codegen-gpu-reduce-bank-conflicts{padding-bits=64}",
    "iree-codegen-fold-memref-alias-ops",
    "cse",
    "canonicalize",
    "cse",
)

PIPELINE = ",".join(PASSES)
