  // Included by rmsnorm_backward.mlir for static shapes on GPUs, M = {G} * {R}:
  // dX and dgamma in one pass over dY and X. Defines %dx and %dgamma_acc.
  //
  // LayerNorm's one-pass design (row_block_pass.mlir, which says why it is
  // built this way) with RMSNorm's math: one row sum (g * x_hat) and one
  // column sum (dgamma), so the block's fp32 partials are [1, N] per
  // workgroup, half of LayerNorm's [2, N]. The same schedule rules
  // (ops/layernorm.py row_blocks, row_block_configs with one sum), pass
  // pipeline (lnbwd_iree/row_block_pipeline.py) and transform library
  // (row_block_configs.mlir, which finds the ops by lnbwd_role) apply.
  %dy_static = tensor.cast %dy : tensor<?x?x{T}> to tensor<{M}x{N}x{T}>
  %x_static = tensor.cast %x : tensor<?x?x{T}> to tensor<{M}x{N}x{T}>
  %gamma_static = tensor.cast %gamma : tensor<?x{T}> to tensor<{N}x{T}>
  %rstd_static = tensor.cast %rstd : tensor<?x{A}> to tensor<{M}x{A}>
  %dy_blocks = tensor.expand_shape %dy_static [[0, 1], [2]] output_shape [{G}, {R}, {N}] : tensor<{M}x{N}x{T}> into tensor<{G}x{R}x{N}x{T}>
  %x_blocks = tensor.expand_shape %x_static [[0, 1], [2]] output_shape [{G}, {R}, {N}] : tensor<{M}x{N}x{T}> into tensor<{G}x{R}x{N}x{T}>
  %rstd_blocks = tensor.expand_shape %rstd_static [[0, 1]] output_shape [{G}, {R}] : tensor<{M}x{A}> into tensor<{G}x{R}x{A}>
  %dx_blocks, %partials_static = flow.dispatch.region -> (tensor<{G}x{R}x{N}x{T}>, tensor<{G}x1x{N}x{A}>) {
    %block_row_init = tensor.empty() : tensor<{G}x{R}x{A}>
    %block_row_zero = linalg.fill {lnbwd_role = "fill"} ins(%zero : {A}) outs(%block_row_init : tensor<{G}x{R}x{A}>) -> tensor<{G}x{R}x{A}>
    // Per-row sum of g * x_hat: it reads a row's dY and X together, so the
    // row's loads are issued before its workgroup reduction as they are.
    %block_sum_g_xhat = linalg.generic {
        indexing_maps = [affine_map<(g, r, j) -> (g, r, j)>, affine_map<(g, r, j) -> (g, r, j)>, affine_map<(g, r, j) -> (j)>,
                         affine_map<(g, r, j) -> (g, r)>, affine_map<(g, r, j) -> (g, r)>],
        iterator_types = ["parallel", "parallel", "reduction"], lnbwd_role = "row"}
        ins(%dy_blocks, %x_blocks, %gamma_static, %rstd_blocks
            : tensor<{G}x{R}x{N}x{T}>, tensor<{G}x{R}x{N}x{T}>, tensor<{N}x{T}>, tensor<{G}x{R}x{A}>)
        outs(%block_row_zero : tensor<{G}x{R}x{A}>) {
    {RMS_ROW_SUM_BODY}
    } -> tensor<{G}x{R}x{A}>
    %block_dx_init = tensor.empty() : tensor<{G}x{R}x{N}x{T}>
    %block_dx = linalg.generic {
        indexing_maps = [affine_map<(g, r, j) -> (g, r, j)>, affine_map<(g, r, j) -> (g, r, j)>, affine_map<(g, r, j) -> (j)>,
                         affine_map<(g, r, j) -> (g, r)>, affine_map<(g, r, j) -> (g, r)>, affine_map<(g, r, j) -> (g, r, j)>],
        iterator_types = ["parallel", "parallel", "parallel"], lnbwd_role = "row"}
        ins(%dy_blocks, %x_blocks, %gamma_static, %rstd_blocks, %block_sum_g_xhat
            : tensor<{G}x{R}x{N}x{T}>, tensor<{G}x{R}x{N}x{T}>, tensor<{N}x{T}>, tensor<{G}x{R}x{A}>, tensor<{G}x{R}x{A}>)
        outs(%block_dx_init : tensor<{G}x{R}x{N}x{T}>) {
    {RMS_DX_BODY}
    } -> tensor<{G}x{R}x{N}x{T}>
    %block_partial_init = tensor.empty() : tensor<{G}x1x{N}x{A}>
    %block_partial_zero = linalg.generic {
        indexing_maps = [affine_map<(g, k, j) -> (g, k, j)>],
        iterator_types = ["parallel", "parallel", "parallel"], lnbwd_role = "zero"}
        outs(%block_partial_init : tensor<{G}x1x{N}x{A}>) {
    ^bb0(%out: {A}):
      linalg.yield %zero : {A}
    } -> tensor<{G}x1x{N}x{A}>
    // The block's partial sums of dY * x_hat (dgamma), k of size 1 so that
    // LayerNorm's [G, K, N] schedule applies. dX is an input only to make it,
    // and through it the row sum, producers of this op, which is what fuses
    // them into its row loop. The select takes dX only where rstd is NaN,
    // where the dgamma term is NaN too (as is dX); a test IREE cannot fold,
    // unlike a constant one.
    %block_partials = linalg.generic {
        indexing_maps = [affine_map<(g, k, j, r) -> (g, r, j)>, affine_map<(g, k, j, r) -> (g, r, j)>,
                         affine_map<(g, k, j, r) -> (g, r)>, affine_map<(g, k, j, r) -> (g, r, j)>,
                         affine_map<(g, k, j, r) -> (g, k, j)>],
        iterator_types = ["parallel", "parallel", "parallel", "reduction"], lnbwd_role = "partials"{ROW_BLOCK_PARTIAL_CONFIG}}
        ins(%dy_blocks, %x_blocks, %rstd_blocks, %block_dx
            : tensor<{G}x{R}x{N}x{T}>, tensor<{G}x{R}x{N}x{T}>, tensor<{G}x{R}x{A}>, tensor<{G}x{R}x{N}x{T}>)
        outs(%block_partial_zero : tensor<{G}x1x{N}x{A}>) {
    ^bb0(%dy_s: {T}, %x_s: {T}, %rstd_s: {A}, %dx_in: {T}, %acc: {A}):
      %dy_w = widen %dy_s
      %x_w = widen %x_s
      %dx_in_w = widen %dx_in
      %xhat = arith.mulf %x_w, %rstd_s : {A}
      %dy_xhat = arith.mulf %dy_w, %xhat : {A}
      %no_rstd = arith.cmpf uno, %rstd_s, %rstd_s : {A}
      %kept = arith.select %no_rstd, %dx_in_w, %dy_xhat : {A}
      %sum = arith.addf %acc, %kept : {A}
      linalg.yield %sum : {A}
    } -> tensor<{G}x1x{N}x{A}>
    flow.return %block_dx, %block_partials : tensor<{G}x{R}x{N}x{T}>, tensor<{G}x1x{N}x{A}>
  }
  %dx_static = tensor.collapse_shape %dx_blocks [[0, 1], [2]] : tensor<{G}x{R}x{N}x{T}> into tensor<{M}x{N}x{T}>
  %dx = tensor.cast %dx_static : tensor<{M}x{N}x{T}> to tensor<?x?x{T}>
  %dgamma_parts_static = tensor.collapse_shape %partials_static [[0], [1, 2]] : tensor<{G}x1x{N}x{A}> into tensor<{G}x{N}x{A}>
  %dgamma_parts = tensor.cast %dgamma_parts_static : tensor<{G}x{N}x{A}> to tensor<{G}x?x{A}>
  {RMS_PARTIALS_SUM}
