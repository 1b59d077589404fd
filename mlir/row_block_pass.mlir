  // Included by layernorm_backward.mlir for static shapes on GPUs, M = {G} * {R}:
  // dX and the column sums in one pass over dY and X. Defines %dx,
  // %dgamma_acc and %dbeta_acc.
  //
  // One dispatch, written out as a flow.dispatch.region because IREE forms
  // no dispatch with two reductions over different dims. Its workgroups own
  // blocks of {R} rows and walk them {P} rows at a time ({STEPS} steps; rows
  // as [G, STEPS, P, N]): those rows' two sums (reductions over j), their
  // dX, and their share of the block's partial column sums (a reduction
  // over the steps r and the rows p of a step), so dY and X leave DRAM once.
  // The partial sums op carries the schedule (ROW_BLOCK_PARTIAL_CONFIG: one
  // block per workgroup, r serial, p whole, and the pass pipeline of
  // lnbwd_iree/row_block_pipeline.py); IREE tiles its step loop and fuses
  // the ops that produce its input into it, and the block's partials stay
  // in registers across that loop: with P > 1 they, and gamma, serve P rows
  // per step, so an SM holds more rows' loads in flight for the same
  // registers. Each op's lnbwd_role names the lowering config that
  // row_block_configs.mlir gives it: "row" spreads a row over the
  // workgroup's threads.
  %dy_static = tensor.cast %dy : tensor<?x?x{T}> to tensor<{M}x{N}x{T}>
  %x_static = tensor.cast %x : tensor<?x?x{T}> to tensor<{M}x{N}x{T}>
  %gamma_static = tensor.cast %gamma : tensor<?x{T}> to tensor<{N}x{T}>
  %mean_static = tensor.cast %mean : tensor<?x{A}> to tensor<{M}x{A}>
  %rstd_static = tensor.cast %rstd : tensor<?x{A}> to tensor<{M}x{A}>
  %dy_blocks = tensor.expand_shape %dy_static [[0, 1, 2], [3]] output_shape [{G}, {STEPS}, {P}, {N}] : tensor<{M}x{N}x{T}> into tensor<{G}x{STEPS}x{P}x{N}x{T}>
  %x_blocks = tensor.expand_shape %x_static [[0, 1, 2], [3]] output_shape [{G}, {STEPS}, {P}, {N}] : tensor<{M}x{N}x{T}> into tensor<{G}x{STEPS}x{P}x{N}x{T}>
  %mean_blocks = tensor.expand_shape %mean_static [[0, 1, 2]] output_shape [{G}, {STEPS}, {P}] : tensor<{M}x{A}> into tensor<{G}x{STEPS}x{P}x{A}>
  %rstd_blocks = tensor.expand_shape %rstd_static [[0, 1, 2]] output_shape [{G}, {STEPS}, {P}] : tensor<{M}x{A}> into tensor<{G}x{STEPS}x{P}x{A}>
  %dx_blocks, %partials_static = flow.dispatch.region -> (tensor<{G}x{STEPS}x{P}x{N}x{T}>, tensor<{G}x2x{N}x{A}>) {
    %block_row_init = tensor.empty() : tensor<{G}x{STEPS}x{P}x{A}>
    %block_row_zero = linalg.fill {lnbwd_role = "fill"} ins(%zero : {A}) outs(%block_row_init : tensor<{G}x{STEPS}x{P}x{A}>) -> tensor<{G}x{STEPS}x{P}x{A}>
    // Per-row sum of gamma * dY. X, mean and rstd are inputs as well: where
    // %load_x_first compares mean and rstd (16-bit rows of >= 4096
    // elements, layernorm.py), a row's X and statistics are loaded with its
    // dY, before this sum's workgroup reduction rather than after it (one
    // memory latency per row instead of two in sequence). The select then takes x only where mean or rstd is
    // NaN, where dX and dgamma are NaN whatever this sum is (dbeta does not
    // use it), so results are unchanged. Where it is the constant false
    // (f32 and shorter rows, which measured no gain), the select folds away
    // and with it the extra inputs.
    %block_sum_g = linalg.generic {
        indexing_maps = [affine_map<(g, r, p, j) -> (g, r, p, j)>, affine_map<(g, r, p, j) -> (g, r, p, j)>, affine_map<(g, r, p, j) -> (j)>,
                         affine_map<(g, r, p, j) -> (g, r, p)>, affine_map<(g, r, p, j) -> (g, r, p)>, affine_map<(g, r, p, j) -> (g, r, p)>],
        iterator_types = ["parallel", "parallel", "parallel", "reduction"], lnbwd_role = "row"}
        ins(%dy_blocks, %x_blocks, %gamma_static, %mean_blocks, %rstd_blocks
            : tensor<{G}x{STEPS}x{P}x{N}x{T}>, tensor<{G}x{STEPS}x{P}x{N}x{T}>, tensor<{N}x{T}>, tensor<{G}x{STEPS}x{P}x{A}>, tensor<{G}x{STEPS}x{P}x{A}>)
        outs(%block_row_zero : tensor<{G}x{STEPS}x{P}x{A}>) {
    ^bb0(%dy_s: {T}, %x_s: {T}, %gamma_s: {T}, %mean_s: {A}, %rstd_s: {A}, %acc: {A}):
      %dy_w = widen %dy_s
      %x_w = widen %x_s
      %gamma_w = widen %gamma_s
      %g = arith.mulf %gamma_w, %dy_w : {A}
      {SUM_G_READS_X}
      %term = arith.select %load_x_first, %x_w, %g : {A}
      %sum = arith.addf %acc, %term : {A}
      linalg.yield %sum : {A}
    } -> tensor<{G}x{STEPS}x{P}x{A}>
    // Per-row sum of (g - mean_j'(g)) * x_hat, as in row_then_column_passes.mlir.
    %block_sum_gc_xhat = linalg.generic {
        indexing_maps = [affine_map<(g, r, p, j) -> (g, r, p, j)>, affine_map<(g, r, p, j) -> (g, r, p, j)>, affine_map<(g, r, p, j) -> (j)>,
                         affine_map<(g, r, p, j) -> (g, r, p)>, affine_map<(g, r, p, j) -> (g, r, p)>, affine_map<(g, r, p, j) -> (g, r, p)>,
                         affine_map<(g, r, p, j) -> (g, r, p)>],
        iterator_types = ["parallel", "parallel", "parallel", "reduction"], lnbwd_role = "row"}
        ins(%dy_blocks, %x_blocks, %gamma_static, %mean_blocks, %rstd_blocks, %block_sum_g
            : tensor<{G}x{STEPS}x{P}x{N}x{T}>, tensor<{G}x{STEPS}x{P}x{N}x{T}>, tensor<{N}x{T}>, tensor<{G}x{STEPS}x{P}x{A}>,
              tensor<{G}x{STEPS}x{P}x{A}>, tensor<{G}x{STEPS}x{P}x{A}>)
        outs(%block_row_zero : tensor<{G}x{STEPS}x{P}x{A}>) {
    {ROW_SUM_GC_XHAT_BODY}
    } -> tensor<{G}x{STEPS}x{P}x{A}>
    %block_dx_init = tensor.empty() : tensor<{G}x{STEPS}x{P}x{N}x{T}>
    %block_dx = linalg.generic {
        indexing_maps = [affine_map<(g, r, p, j) -> (g, r, p, j)>, affine_map<(g, r, p, j) -> (g, r, p, j)>, affine_map<(g, r, p, j) -> (j)>,
                         affine_map<(g, r, p, j) -> (g, r, p)>, affine_map<(g, r, p, j) -> (g, r, p)>, affine_map<(g, r, p, j) -> (g, r, p)>,
                         affine_map<(g, r, p, j) -> (g, r, p)>, affine_map<(g, r, p, j) -> (g, r, p, j)>],
        iterator_types = ["parallel", "parallel", "parallel", "parallel"], lnbwd_role = "row"}
        ins(%dy_blocks, %x_blocks, %gamma_static, %mean_blocks, %rstd_blocks, %block_sum_g, %block_sum_gc_xhat
            : tensor<{G}x{STEPS}x{P}x{N}x{T}>, tensor<{G}x{STEPS}x{P}x{N}x{T}>, tensor<{N}x{T}>, tensor<{G}x{STEPS}x{P}x{A}>,
              tensor<{G}x{STEPS}x{P}x{A}>, tensor<{G}x{STEPS}x{P}x{A}>, tensor<{G}x{STEPS}x{P}x{A}>)
        outs(%block_dx_init : tensor<{G}x{STEPS}x{P}x{N}x{T}>) {
    {DX_BODY}
    } -> tensor<{G}x{STEPS}x{P}x{N}x{T}>
    // Zeroed by a generic rather than linalg.fill so that it can carry a
    // lowering config ("zero"): without a thread layout every thread stored
    // the whole [2, N] block of zeros, byte by byte.
    %block_partial_init = tensor.empty() : tensor<{G}x2x{N}x{A}>
    %block_partial_zero = linalg.generic {
        indexing_maps = [affine_map<(g, k, j) -> (g, k, j)>],
        iterator_types = ["parallel", "parallel", "parallel"], lnbwd_role = "zero"}
        outs(%block_partial_init : tensor<{G}x2x{N}x{A}>) {
    ^bb0(%out: {A}):
      linalg.yield %zero : {A}
    } -> tensor<{G}x2x{N}x{A}>
    // Each row's terms of the block's partial sums, k = 0: dY (dbeta),
    // k = 1: dY * x_hat (dgamma), selected by %kinds (an input rather than
    // linalg.index, which left masks that VectorDistribute could not lay
    // out). dX is an input only to make it, and through it the row sums,
    // producers of the partials, which is what fuses them into the step
    // loop; %kinds never exceeds 1, so the select never takes it. The terms
    // are never stored: the partial sums read them through an identity map,
    // which gives their reduction over (r, p) a layout (read as broadcasts
    // inside that op, the (g, r, p) and (g, r, p, j) inputs got none and
    // IREE 3.13 "failed to distribute" steps of more than one row).
    %kinds = arith.constant dense<[0, 1]> : tensor<2xi32>
    %block_terms_init = tensor.empty() : tensor<{G}x2x{N}x{STEPS}x{P}x{A}>
    %block_terms = linalg.generic {
        indexing_maps = [affine_map<(g, k, j, r, p) -> (g, r, p, j)>, affine_map<(g, k, j, r, p) -> (g, r, p, j)>,
                         affine_map<(g, k, j, r, p) -> (g, r, p)>, affine_map<(g, k, j, r, p) -> (g, r, p)>,
                         affine_map<(g, k, j, r, p) -> (g, r, p, j)>, affine_map<(g, k, j, r, p) -> (k)>,
                         affine_map<(g, k, j, r, p) -> (g, k, j, r, p)>],
        iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel"], lnbwd_role = "terms"}
        ins(%dy_blocks, %x_blocks, %mean_blocks, %rstd_blocks, %block_dx, %kinds
            : tensor<{G}x{STEPS}x{P}x{N}x{T}>, tensor<{G}x{STEPS}x{P}x{N}x{T}>, tensor<{G}x{STEPS}x{P}x{A}>,
              tensor<{G}x{STEPS}x{P}x{A}>, tensor<{G}x{STEPS}x{P}x{N}x{T}>, tensor<2xi32>)
        outs(%block_terms_init : tensor<{G}x2x{N}x{STEPS}x{P}x{A}>) {
    ^bb0(%dy_s: {T}, %x_s: {T}, %mean_s: {A}, %rstd_s: {A}, %dx_in: {T}, %kind: i32, %out: {A}):
      %dy_w = widen %dy_s
      %x_w = widen %x_s
      %dx_in_w = widen %dx_in
      %dgamma_kind = arith.constant 1 : i32
      %is_dgamma = arith.cmpi eq, %kind, %dgamma_kind : i32
      %never = arith.cmpi sgt, %kind, %dgamma_kind : i32
      %centred = arith.subf %x_w, %mean_s : {A}
      %xhat = arith.mulf %centred, %rstd_s : {A}
      %dy_xhat = arith.mulf %dy_w, %xhat : {A}
      %term = arith.select %is_dgamma, %dy_xhat, %dy_w : {A}
      %kept = arith.select %never, %dx_in_w, %term : {A}
      linalg.yield %kept : {A}
    } -> tensor<{G}x2x{N}x{STEPS}x{P}x{A}>
    %block_partials = linalg.generic {
        indexing_maps = [affine_map<(g, k, j, r, p) -> (g, k, j, r, p)>, affine_map<(g, k, j, r, p) -> (g, k, j)>],
        iterator_types = ["parallel", "parallel", "parallel", "reduction", "reduction"], lnbwd_role = "partials"{ROW_BLOCK_PARTIAL_CONFIG}}
        ins(%block_terms : tensor<{G}x2x{N}x{STEPS}x{P}x{A}>) outs(%block_partial_zero : tensor<{G}x2x{N}x{A}>) {
    ^bb0(%term_s: {A}, %acc: {A}):
      %sum = arith.addf %acc, %term_s : {A}
      linalg.yield %sum : {A}
    } -> tensor<{G}x2x{N}x{A}>
    flow.return %block_dx, %block_partials : tensor<{G}x{STEPS}x{P}x{N}x{T}>, tensor<{G}x2x{N}x{A}>
  }
  %dx_static = tensor.collapse_shape %dx_blocks [[0, 1, 2], [3]] : tensor<{G}x{STEPS}x{P}x{N}x{T}> into tensor<{M}x{N}x{T}>
  %dx = tensor.cast %dx_static : tensor<{M}x{N}x{T}> to tensor<?x?x{T}>
  %partials = tensor.cast %partials_static : tensor<{G}x2x{N}x{A}> to tensor<{PARTIALS}>
  {FINAL_SUMS}
