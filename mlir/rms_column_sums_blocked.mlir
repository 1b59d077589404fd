  // Included by rmsnorm_row_then_column_passes.mlir for static M = {G} * {R}:
  // dgamma in two stages, as LayerNorm's column_sums_blocked.mlir with one
  // sum. Each of {G} blocks of {R} rows sums dY * x_hat down its columns into
  // [G, N] partials, iterated (g, j, r) (PARTIAL_CONFIG: ops/layernorm.py
  // partial_config without a k dim, which IREE would fold away with the
  // schedule); then RMS_PARTIALS_SUM adds them. LayerNorm's op fed a zero
  // mean lost its schedule too: IREE drops its unused sum of dY by
  // rewriting the op.
  %dy_rows = tensor.cast %dy : tensor<?x?x{T}> to tensor<{M}x?x{T}>
  %x_rows = tensor.cast %x : tensor<?x?x{T}> to tensor<{M}x?x{T}>
  %rstd_rows = tensor.cast %rstd : tensor<?x{A}> to tensor<{M}x{A}>
  %dy_blocks = tensor.expand_shape %dy_rows [[0, 1], [2]] output_shape [{G}, {R}, %n] : tensor<{M}x?x{T}> into tensor<{G}x{R}x?x{T}>
  %x_blocks = tensor.expand_shape %x_rows [[0, 1], [2]] output_shape [{G}, {R}, %n] : tensor<{M}x?x{T}> into tensor<{G}x{R}x?x{T}>
  %rstd_blocks = tensor.expand_shape %rstd_rows [[0, 1]] output_shape [{G}, {R}] : tensor<{M}x{A}> into tensor<{G}x{R}x{A}>
  %partial_init = tensor.empty(%n) : tensor<{G}x?x{A}>
  %partial_zero = linalg.fill ins(%zero : {A}) outs(%partial_init : tensor<{G}x?x{A}>) -> tensor<{G}x?x{A}>
  %dgamma_parts = linalg.generic {
      indexing_maps = [affine_map<(g, j, r) -> (g, r, j)>, affine_map<(g, j, r) -> (g, r, j)>,
                       affine_map<(g, j, r) -> (g, r)>, affine_map<(g, j, r) -> (g, j)>],
      iterator_types = ["parallel", "parallel", "reduction"]{PARTIAL_CONFIG}}
      ins(%dy_blocks, %x_blocks, %rstd_blocks : tensor<{G}x{R}x?x{T}>, tensor<{G}x{R}x?x{T}>, tensor<{G}x{R}x{A}>)
      outs(%partial_zero : tensor<{G}x?x{A}>) {
  ^bb0(%dy_s: {T}, %x_s: {T}, %rstd_s: {A}, %acc: {A}):
    %dy_w = widen %dy_s
    %x_w = widen %x_s
    %xhat = arith.mulf %x_w, %rstd_s : {A}
    %dy_xhat = arith.mulf %dy_w, %xhat : {A}
    %sum = arith.addf %acc, %dy_xhat : {A}
    linalg.yield %sum : {A}
  } -> tensor<{G}x?x{A}>
  {RMS_PARTIALS_SUM}
