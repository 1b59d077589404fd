  // Included by layernorm_backward.mlir: the row sums and dX in one dispatch
  // (a pass over dY and X), then the column sums from COLUMN_SUMS (a second
  // pass). Defines %dx, %dgamma_acc and %dbeta_acc.
  %row_init = tensor.empty(%m) : tensor<?x{A}>
  %row_zero = linalg.fill ins(%zero : {A}) outs(%row_init : tensor<?x{A}>) -> tensor<?x{A}>

  // Per-row sum of gamma * dY. One reduction output per generic: GPU
  // bufferization rejects generics with two reduction outputs.
  %row_sum_g = linalg.generic {
      indexing_maps = [#rows_cols, #cols, #rows],
      iterator_types = ["parallel", "reduction"]{ROW_SUM_CONFIG}}
      ins(%dy, %gamma : tensor<?x?x{T}>, tensor<?x{T}>) outs(%row_zero : tensor<?x{A}>) {
  {ROW_SUM_G_BODY}
  } -> tensor<?x{A}>

  // Per-row sum of (g - mean_j'(g)) * x_hat. Equal to sum(g * x_hat) when
  // mean and rstd are X's statistics (sum_j x_hat = 0), and better
  // conditioned. Taking the first sum as an input makes the two reductions
  // and dX one chain, as in softmax, which IREE fuses into one dispatch:
  // dY and X are read once for all three instead of once per reduction.
  %row_sum_gc_xhat = linalg.generic {
      indexing_maps = [#rows_cols, #rows_cols, #cols, #rows, #rows, #rows, #rows],
      iterator_types = ["parallel", "reduction"]{ROW_ROOT_CONFIG}}
      ins(%dy, %x, %gamma, %mean, %rstd, %row_sum_g : tensor<?x?x{T}>, tensor<?x?x{T}>, tensor<?x{T}>, tensor<?x{A}>, tensor<?x{A}>, tensor<?x{A}>)
      outs(%row_zero : tensor<?x{A}>) {
  {ROW_SUM_GC_XHAT_BODY}
  } -> tensor<?x{A}>

  %dx_init = tensor.empty(%m, %n) : tensor<?x?x{T}>
  %dx = linalg.generic {
      indexing_maps = [#rows_cols, #rows_cols, #cols, #rows, #rows, #rows, #rows, #rows_cols],
      iterator_types = ["parallel", "parallel"]{ROW_DX_CONFIG}}
      ins(%dy, %x, %gamma, %mean, %rstd, %row_sum_g, %row_sum_gc_xhat
          : tensor<?x?x{T}>, tensor<?x?x{T}>, tensor<?x{T}>, tensor<?x{A}>, tensor<?x{A}>, tensor<?x{A}>, tensor<?x{A}>)
      outs(%dx_init : tensor<?x?x{T}>) {
  {DX_BODY}
  } -> tensor<?x?x{T}>

  {COLUMN_SUMS}
