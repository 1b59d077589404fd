  // Included by layernorm_backward.mlir: dbeta and dgamma as one reduction
  // over all M rows per column (any M, including dynamic).
  %col_init = tensor.empty(%n) : tensor<?xf32>
  %col_zero = linalg.fill ins(%zero : f32) outs(%col_init : tensor<?xf32>) -> tensor<?xf32>
  %dbeta_f32 = linalg.generic {
      indexing_maps = [#rows_cols, #cols],
      iterator_types = ["reduction", "parallel"]}
      ins(%dy : tensor<?x?x{T}>) outs(%col_zero : tensor<?xf32>) {
  ^bb0(%dy_s: {T}, %acc: f32):
    %dy_w = widen %dy_s
    %sum = arith.addf %acc, %dy_w : f32
    linalg.yield %sum : f32
  } -> tensor<?xf32>
  %dgamma_f32 = linalg.generic {
      indexing_maps = [#rows_cols, #rows_cols, #rows, #rows, #cols],
      iterator_types = ["reduction", "parallel"]}
      ins(%dy, %x, %mean, %rstd : tensor<?x?x{T}>, tensor<?x?x{T}>, tensor<?xf32>, tensor<?xf32>)
      outs(%col_zero : tensor<?xf32>) {
  ^bb0(%dy_s: {T}, %x_s: {T}, %mean_s: f32, %rstd_s: f32, %acc: f32):
    %dy_w = widen %dy_s
    %x_w = widen %x_s
    %centred = arith.subf %x_w, %mean_s : f32
    %xhat = arith.mulf %centred, %rstd_s : f32
    %dy_xhat = arith.mulf %dy_w, %xhat : f32
    %sum = arith.addf %acc, %dy_xhat : f32
    linalg.yield %sum : f32
  } -> tensor<?xf32>
