  // Included by rmsnorm_backward.mlir: the row sum and dX in one dispatch (a
  // pass over dY and X), then dgamma from the column sums COLUMN_SUMS (a
  // second pass). Defines %dx and %dgamma_acc.
  %row_init = tensor.empty(%m) : tensor<?x{A}>
  %row_zero = linalg.fill ins(%zero : {A}) outs(%row_init : tensor<?x{A}>) -> tensor<?x{A}>
  // Per-row sum of g * x_hat, then dX from it: one chain that IREE fuses
  // into one dispatch on GPUs, reading each row of dY and X once.
  %row_sum_g_xhat = linalg.generic {
      indexing_maps = [#rows_cols, #rows_cols, #cols, #rows, #rows],
      iterator_types = ["parallel", "reduction"]{ROW_ROOT_CONFIG}}
      ins(%dy, %x, %gamma, %rstd : tensor<?x?x{T}>, tensor<?x?x{T}>, tensor<?x{T}>, tensor<?x{A}>)
      outs(%row_zero : tensor<?x{A}>) {
  {RMS_ROW_SUM_BODY}
  } -> tensor<?x{A}>
  %dx_init = tensor.empty(%m, %n) : tensor<?x?x{T}>
  %dx = linalg.generic {
      indexing_maps = [#rows_cols, #rows_cols, #cols, #rows, #rows, #rows_cols],
      iterator_types = ["parallel", "parallel"]{ROW_DX_CONFIG}}
      ins(%dy, %x, %gamma, %rstd, %row_sum_g_xhat : tensor<?x?x{T}>, tensor<?x?x{T}>, tensor<?x{T}>, tensor<?x{A}>, tensor<?x{A}>)
      outs(%dx_init : tensor<?x?x{T}>) {
  {RMS_DX_BODY}
  } -> tensor<?x?x{T}>

  // dgamma: COLUMN_SUMS, blocked partials of one sum for static M
  // (rms_column_sums_blocked.mlir), else LayerNorm's one reduction over all
  // rows (column_sums_direct.mlir) with a zero mean, so that its x_hat is
  // x * rstd; the sum of dY it also makes (LayerNorm's dbeta) is unused and
  // IREE drops it.
  %mean_init = tensor.empty(%m) : tensor<?x{A}>
  %mean = linalg.fill ins(%zero : {A}) outs(%mean_init : tensor<?x{A}>) -> tensor<?x{A}>
  {COLUMN_SUMS}
