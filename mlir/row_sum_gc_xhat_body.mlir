  // The body of the per-row sum of (g - mean_j'(g)) * x_hat
  // (row_then_column_passes.mlir, row_block_pass.mlir).
  ^bb0(%dy_s: {T}, %x_s: {T}, %gamma_s: {T}, %mean_s: {A}, %rstd_s: {A}, %sum_g: {A}, %acc: {A}):
    %dy_w = widen %dy_s
    %x_w = widen %x_s
    %gamma_w = widen %gamma_s
    %centred = arith.subf %x_w, %mean_s : {A}
    %xhat = arith.mulf %centred, %rstd_s : {A}
    %mean_g = arith.mulf %sum_g, %inv_n : {A}
    // %g_c = gamma * dY - mean_g
    {GC_TERM}
    %gc_xhat = arith.mulf %g_c, %xhat : {A}
    %sum = arith.addf %acc, %gc_xhat : {A}
    linalg.yield %sum : {A}
