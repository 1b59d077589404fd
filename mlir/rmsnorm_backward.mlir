// RMSNorm-2D backward: dX and dgamma from dY, X, gamma and the forward's
// rstd = 1/sqrt(mean_j(x^2) + eps), rows of length N. Fields: T, A, M, N as
// in layernorm_backward.mlir; STATS_BARRIER defines %rstd from %rstd_fused
// in the recompute entry; GRADIENT_PASSES names the file that computes %dx
// and %dgamma_acc: rmsnorm_row_block_pass.mlir (one pass over dY and X, for
// static shapes on GPUs; LayerNorm's row-block schedule with one column sum)
// or rmsnorm_row_then_column_passes.mlir (two passes: the row dispatch with
// ROW_ROOT_CONFIG and ROW_DX_CONFIG, hand-set GPU schedules or empty, then
// the column sums COLUMN_SUMS and their fields: blocked partials of one sum
// for static M, else LayerNorm's direct sums fed a zero mean). Both take the row
// ops' bodies from RMS_ROW_SUM_BODY and RMS_DX_BODY (ops/rmsnorm.py).
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

  {GRADIENT_PASSES}

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
