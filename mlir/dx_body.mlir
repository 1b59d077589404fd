  // The body of dX from a row's two sums (row_then_column_passes.mlir,
  // row_block_pass.mlir).
  ^bb0(%dy_s: {T}, %x_s: {T}, %gamma_s: {T}, %mean_s: {A}, %rstd_s: {A}, %sum_g: {A}, %sum_gc_xhat: {A}, %out: {T}):
    %dy_w = widen %dy_s
    %x_w = widen %x_s
    %gamma_w = widen %gamma_s
    %centred = arith.subf %x_w, %mean_s : {A}
    %xhat = arith.mulf %centred, %rstd_s : {A}
    // gamma * dY - mean_g - x_hat * mean_g_xhat as two fmas: with
    // gamma * dY as an fma operand, the product of a row's dY and gamma
    // is not kept live across the row's reductions (GPU registers).
    %mean_g = arith.mulf %sum_g, %inv_n : {A}
    %mean_g_xhat = arith.mulf %sum_gc_xhat, %inv_n : {A}
    %neg_mean_g = arith.negf %mean_g : {A}
    %neg_mean_g_xhat = arith.negf %mean_g_xhat : {A}
    %shift = math.fma %xhat, %neg_mean_g_xhat, %neg_mean_g : {A}
    %t2 = math.fma %gamma_w, %dy_w, %shift : {A}
    %dx_w = arith.mulf %t2, %rstd_s : {A}
    %dx_s = narrow %dx_w
    linalg.yield %dx_s : {T}
