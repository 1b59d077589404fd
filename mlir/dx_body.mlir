  // The body of dX from a row's two sums (row_then_column_passes.mlir,
  // row_block_pass.mlir).
  ^bb0(%dy_s: {T}, %x_s: {T}, %gamma_s: {T}, %mean_s: {A}, %rstd_s: {A}, %sum_g: {A}, %sum_gc_xhat: {A}, %out: {T}):
    %dy_w = widen %dy_s
    %x_w = widen %x_s
    %gamma_w = widen %gamma_s
    %centred = arith.subf %x_w, %mean_s : {A}
    %xhat = arith.mulf %centred, %rstd_s : {A}
    %mean_g = arith.mulf %sum_g, %inv_n : {A}
    %mean_g_xhat = arith.mulf %sum_gc_xhat, %inv_n : {A}
    // %t2 = gamma * dY - mean_g - x_hat * mean_g_xhat
    {DX_NUMERATOR}
    %dx_w = arith.mulf %t2, %rstd_s : {A}
    %dx_s = narrow %dx_w
    linalg.yield %dx_s : {T}
