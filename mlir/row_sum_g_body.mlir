  // The body of the per-row sum of gamma * dY (row_then_column_passes.mlir,
  // row_block_pass.mlir).
  ^bb0(%dy_s: {T}, %gamma_s: {T}, %acc: {A}):
    %dy_w = widen %dy_s
    %gamma_w = widen %gamma_s
    %g = arith.mulf %gamma_w, %dy_w : {A}
    %sum = arith.addf %acc, %g : {A}
    linalg.yield %sum : {A}
