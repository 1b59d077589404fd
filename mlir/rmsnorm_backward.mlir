// RMSNorm-2D backward: dX and dgamma from dY, X, gamma and the forward's
// rstd = 1/sqrt(mean_j(x^2) + eps), rows of length N. Fields: T, A, M, N as
// in layernorm_backward.mlir; ROW_ROOT_CONFIG and ROW_DX_CONFIG are hand-set
// GPU schedules of the row dispatch (ops/rmsnorm.py), or empty; STATS_BARRIER
// defines %rstd from %rstd_fused in the recompute entry; COLUMN_SUMS and its
// fields are LayerNorm's two-pass column sums.
//
// Math, with x_hat = x * rstd and g = gamma * dY:
//   dgamma_j = sum_i dY_ij * x_hat_ij
//   dX_ij    = rstd_i * (g_ij - x_hat_ij * mean_j'(g_ij' * x_hat_ij'))

#rows_cols = affine_map<(i, j) -> (i, j)>
#rows = affine_map<(i, j) -> (i)>
#cols = affine_map<(i, j) -> (j)>

func.func @rmsnorm_backward(
    %dy_arg: tensor<{M}x{N}x{T}>, %x_arg: tensor<{M}x{N}x{T}>, %gamma_arg: tensor<{N}x{T}>,
    %rstd_arg: tensor<{M}x{A}>,
    %dx_storage: tensor<{M}x{N}x{T}> {iree.abi.output = 0 : index},
    %dgamma_storage: tensor<{N}x{T}> {iree.abi.output = 1 : index},
    %transients: !hal.buffer {iree.abi.transients})
    -> (tensor<{M}x{N}x{T}>, tensor<{N}x{T}>) {
  %dx, %dgamma = func.call @rms_backward_with_stats(%dy_arg, %x_arg, %gamma_arg, %rstd_arg)
      : (tensor<{M}x{N}x{T}>, tensor<{M}x{N}x{T}>, tensor<{N}x{T}>, tensor<{M}x{A}>)
      -> (tensor<{M}x{N}x{T}>, tensor<{N}x{T}>)
  return %dx, %dgamma : tensor<{M}x{N}x{T}>, tensor<{N}x{T}>
}

// For callers that did not keep the forward's rstd: recomputes it from X.
func.func @rmsnorm_backward_recompute(
    %dy_arg: tensor<{M}x{N}x{T}>, %x_arg: tensor<{M}x{N}x{T}>, %gamma_arg: tensor<{N}x{T}>, %eps: f32,
    %dx_storage: tensor<{M}x{N}x{T}> {iree.abi.output = 0 : index},
    %dgamma_storage: tensor<{N}x{T}> {iree.abi.output = 1 : index},
    %transients: !hal.buffer {iree.abi.transients})
    -> (tensor<{M}x{N}x{T}>, tensor<{N}x{T}>) {
  %rstd_fused = func.call @rms_statistics(%x_arg, %eps) : (tensor<{M}x{N}x{T}>, f32) -> tensor<{M}x{A}>
  {STATS_BARRIER}
  %dx, %dgamma = func.call @rms_backward_with_stats(%dy_arg, %x_arg, %gamma_arg, %rstd)
      : (tensor<{M}x{N}x{T}>, tensor<{M}x{N}x{T}>, tensor<{N}x{T}>, tensor<{M}x{A}>)
      -> (tensor<{M}x{N}x{T}>, tensor<{N}x{T}>)
  return %dx, %dgamma : tensor<{M}x{N}x{T}>, tensor<{N}x{T}>
}

{RMS_STATISTICS}

func.func private @rms_backward_with_stats(
    %dy_arg: tensor<{M}x{N}x{T}>, %x_arg: tensor<{M}x{N}x{T}>, %gamma_arg: tensor<{N}x{T}>,
    %rstd_arg: tensor<{M}x{A}>) -> (tensor<{M}x{N}x{T}>, tensor<{N}x{T}>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %zero = arith.constant 0.0 : {A}
  %one = arith.constant 1.0 : {A}
  %dy = tensor.cast %dy_arg : tensor<{M}x{N}x{T}> to tensor<?x?x{T}>
  %x = tensor.cast %x_arg : tensor<{M}x{N}x{T}> to tensor<?x?x{T}>
  %gamma = tensor.cast %gamma_arg : tensor<{N}x{T}> to tensor<?x{T}>
  %rstd = tensor.cast %rstd_arg : tensor<{M}x{A}> to tensor<?x{A}>
  %m = tensor.dim %dy, %c0 : tensor<?x?x{T}>
  %n = tensor.dim %dy, %c1 : tensor<?x?x{T}>
  %n_i64 = arith.index_cast %n : index to i64
  %n_acc = arith.sitofp %n_i64 : i64 to {A}
  %inv_n = arith.divf %one, %n_acc : {A}

  %row_init = tensor.empty(%m) : tensor<?x{A}>
  %row_zero = linalg.fill ins(%zero : {A}) outs(%row_init : tensor<?x{A}>) -> tensor<?x{A}>
  // Per-row sum of g * x_hat, then dX from it: one chain that IREE fuses
  // into one dispatch on GPUs, reading each row of dY and X once.
  %row_sum_g_xhat = linalg.generic {
      indexing_maps = [#rows_cols, #rows_cols, #cols, #rows, #rows],
      iterator_types = ["parallel", "reduction"]{ROW_ROOT_CONFIG}}
      ins(%dy, %x, %gamma, %rstd : tensor<?x?x{T}>, tensor<?x?x{T}>, tensor<?x{T}>, tensor<?x{A}>)
      outs(%row_zero : tensor<?x{A}>) {
  ^bb0(%dy_s: {T}, %x_s: {T}, %gamma_s: {T}, %rstd_s: {A}, %acc: {A}):
    %dy_w = widen %dy_s
    %x_w = widen %x_s
    %gamma_w = widen %gamma_s
    %xhat = arith.mulf %x_w, %rstd_s : {A}
    %g = arith.mulf %gamma_w, %dy_w : {A}
    %g_xhat = arith.mulf %g, %xhat : {A}
    %sum = arith.addf %acc, %g_xhat : {A}
    linalg.yield %sum : {A}
  } -> tensor<?x{A}>
  %dx_init = tensor.empty(%m, %n) : tensor<?x?x{T}>
  %dx = linalg.generic {
      indexing_maps = [#rows_cols, #rows_cols, #cols, #rows, #rows, #rows_cols],
      iterator_types = ["parallel", "parallel"]{ROW_DX_CONFIG}}
      ins(%dy, %x, %gamma, %rstd, %row_sum_g_xhat : tensor<?x?x{T}>, tensor<?x?x{T}>, tensor<?x{T}>, tensor<?x{A}>, tensor<?x{A}>)
      outs(%dx_init : tensor<?x?x{T}>) {
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
  } -> tensor<?x?x{T}>

  // dgamma: LayerNorm's column sums (COLUMN_SUMS: one reduction over all
  // rows, or blocked partials for static M; ops/layernorm.py
  // column_sums_fields) with a zero mean, so that their x_hat is x * rstd.
  // The sum of dY they also make (LayerNorm's dbeta) is unused; IREE drops
  // it, partials included (docs/design.md, RMSNorm).
  %mean_init = tensor.empty(%m) : tensor<?x{A}>
  %mean = linalg.fill ins(%zero : {A}) outs(%mean_init : tensor<?x{A}>) -> tensor<?x{A}>
  {COLUMN_SUMS}
  %col_out_init = tensor.empty(%n) : tensor<?x{T}>
  %dgamma = linalg.generic {
      indexing_maps = [affine_map<(j) -> (j)>, affine_map<(j) -> (j)>], iterator_types = ["parallel"]}
      ins(%dgamma_acc : tensor<?x{A}>) outs(%col_out_init : tensor<?x{T}>) {
  ^bb0(%dgamma_w: {A}, %o: {T}):
    %dgamma_s = narrow %dgamma_w
    linalg.yield %dgamma_s : {T}
  } -> tensor<?x{T}>
  %dx_out = tensor.cast %dx : tensor<?x?x{T}> to tensor<{M}x{N}x{T}>
  %dgamma_out = tensor.cast %dgamma : tensor<?x{T}> to tensor<{N}x{T}>
  return %dx_out, %dgamma_out : tensor<{M}x{N}x{T}>, tensor<{N}x{T}>
}
