  // Included by layernorm_backward.mlir: dbeta and dgamma as one reduction
  // over all M rows per column (any M, including dynamic).
  %col_init = tensor.empty(%n) : tensor<?x{A}>
  %col_zero = linalg.fill ins(%zero : {A}) outs(%col_init : tensor<?x{A}>) -> tensor<?x{A}>
  %dbeta_acc = linalg.generic {
      indexing_maps = [#rows_cols, #cols],
      iterator_types = ["reduction", "parallel"]}
      ins(%dy : tensor<?x?x{T}>) outs(%col_zero : tensor<?x{A}>) {
  ^bb0(%dy_s: {T}, %acc: {A}):
    %dy_w = widen %dy_s
    %sum = arith.addf %acc, %dy_w : {A}
    linalg.yield %sum : {A}
  } -> tensor<?x{A}>
  %dgamma_acc = linalg.generic {
      indexing_maps = [#rows_cols, #rows_cols, #rows, #rows, #cols],
      iterator_types = ["reduction", "parallel"]}
      ins(%dy, %x, %mean, %rstd : tensor<?x?x{T}>, tensor<?x?x{T}>, tensor<?x{A}>, tensor<?x{A}>)
      outs(%col_zero : tensor<?x{A}>) {
  ^bb0(%dy_s: {T}, %x_s: {T}, %mean_s: {A}, %rstd_s: {A}, %acc: {A}):
    %dy_w = widen %dy_s
    %x_w = widen %x_s
    %centred = arith.subf %x_w, %mean_s : {A}
    %xhat = arith.mulf %centred, %rstd_s : {A}
    %dy_xhat = arith.mulf %dy_w, %xhat : {A}
    %sum = arith.addf %acc, %dy_xhat : {A}
    linalg.yield %sum : {A}
  } -> tensor<?x{A}>
