  // The body of the per-row sum of g * x_hat (rmsnorm_row_then_column_passes.mlir,
  // rmsnorm_row_block_pass.mlir).
  ^bb0(%dy_s: {T}, %x_s: {T}, %gamma_s: {T}, %rstd_s: {A}, %acc: {A}):
    %dy_w = widen %dy_s
    %x_w = widen %x_s
    %gamma_w = widen %gamma_s
    %xhat = arith.mulf %x_w, %rstd_s : {A}
    %g = arith.mulf %gamma_w, %dy_w : {A}
    %g_xhat = arith.mulf %g, %xhat : {A}
    %sum = arith.addf %acc, %g_xhat : {A}
    linalg.yield %sum : {A}
