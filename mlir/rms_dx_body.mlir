  // The body of dX from a row's sum of g * x_hat (rmsnorm_row_then_column_passes.mlir,
  // rmsnorm_row_block_pass.mlir).
  ^bb0(%dy_s: {T}, %x_s: {T}, %gamma_s: {T}, %rstd_s: {A}, %sum_g_xhat: {A}, %out: {T}):
    %dy_w = widen %dy_s
    %x_w = widen %x_s
    %gamma_w = widen %gamma_s
    %xhat = arith.mulf %x_w, %rstd_s : {A}
    %g = arith.mulf %gamma_w, %dy_w : {A}
    %mean_g_xhat = arith.mulf %sum_g_xhat, %inv_n : {A}
    %t0 = arith.mulf %xhat, %mean_g_xhat : {A}
    %t1 = arith.subf %g, %t0 : {A}
    %dx_w = arith.mulf %t1, %rstd_s : {A}
    %dx_s = narrow %dx_w
    linalg.yield %dx_s : {T}
