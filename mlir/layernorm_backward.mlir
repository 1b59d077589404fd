// LayerNorm-2D backward: dX, dgamma, dbeta from dY, X, gamma and the forward's
// saved statistics mean and rstd = 1/sqrt(var + eps), all rows of length N.
//
// A template (lnbwd_iree/template.py fills its upper-case fields in braces):
// T is the storage type of dY, X, gamma, dX, dgamma, dbeta (f32, f16, bf16,
// or f64 on CPUs); A the arithmetic type, also that of mean and rstd (f64
// for f64 storage, else f32); M and N are static dims or "?";
// GRADIENT_PASSES names the file that computes %dx, %dgamma_acc and
// %dbeta_acc: row_then_column_passes.mlir (two passes over dY and X; its
// COLUMN_SUMS is column_sums_direct.mlir, or column_sums_blocked.mlir for
// static M; ROW_*_CONFIG are hand-set GPU schedules for its row dispatch, or
// empty) or row_block_pass.mlir (one pass, for static shapes on GPUs). Both
// blocked designs end in FINAL_SUMS, which sums the blocks' partials:
// column_sums_two_results.mlir or column_sums_joint.mlir.
// `%a = widen %b` / `%a = narrow %b` lines convert T to A and back, and
// vanish when T is A; `%a = from_f32 %b` converts the f32 eps to A.
//
// Math, with x_hat = (x - mean) * rstd and g = gamma * dY:
//   dbeta_j  = sum_i dY_ij
//   dgamma_j = sum_i dY_ij * x_hat_ij
//   dX_ij    = rstd_i * (g_ij - mean_j'(g_ij') - x_hat_ij * mean_j'(g_ij' * x_hat_ij'))
// where mean_j' averages over row i. Composable Kernel's example 53 README writes
// the last two terms with the column sums dbeta_j and dgamma_j; that is wrong:
// the derivative of x_hat_i. through mean_i and rstd_i involves only row i, so
// the sums are per row (tests/test_reference.py checks this by finite differences).

#rows_cols = affine_map<(i, j) -> (i, j)>
#rows = affine_map<(i, j) -> (i)>
#cols = affine_map<(i, j) -> (j)>

// Results land in caller-owned storage (iree.abi.output), and the scratch
// space between dispatches is the caller's %transients buffer, sized by the
// exported layernorm_backward_transients_size: a call allocates nothing, so
// back-to-back calls queue without allocator round trips, and callers can
// poison the outputs.
func.func @layernorm_backward(
    %dy_arg: tensor<{M}x{N}x{T}>, %x_arg: tensor<{M}x{N}x{T}>, %gamma_arg: tensor<{N}x{T}>,
    %mean_arg: tensor<{M}x{A}>, %rstd_arg: tensor<{M}x{A}>,
    %dx_storage: tensor<{M}x{N}x{T}> {iree.abi.output = 0 : index},
    %dgamma_storage: tensor<{N}x{T}> {iree.abi.output = 1 : index},
    %dbeta_storage: tensor<{N}x{T}> {iree.abi.output = 2 : index},
    %transients: !hal.buffer {iree.abi.transients})
    -> (tensor<{M}x{N}x{T}>, tensor<{N}x{T}>, tensor<{N}x{T}>) {
  %dx, %dgamma, %dbeta = func.call @backward_with_stats(%dy_arg, %x_arg, %gamma_arg, %mean_arg, %rstd_arg)
      : (tensor<{M}x{N}x{T}>, tensor<{M}x{N}x{T}>, tensor<{N}x{T}>, tensor<{M}x{A}>, tensor<{M}x{A}>)
      -> (tensor<{M}x{N}x{T}>, tensor<{N}x{T}>, tensor<{N}x{T}>)
  return %dx, %dgamma, %dbeta : tensor<{M}x{N}x{T}>, tensor<{N}x{T}>, tensor<{N}x{T}>
}

// For callers that did not keep the forward's statistics: recomputes mean and
// rstd from X (two-pass, so a large common offset in X costs no accuracy).
func.func @layernorm_backward_recompute(
    %dy_arg: tensor<{M}x{N}x{T}>, %x_arg: tensor<{M}x{N}x{T}>, %gamma_arg: tensor<{N}x{T}>, %eps: f32,
    %dx_storage: tensor<{M}x{N}x{T}> {iree.abi.output = 0 : index},
    %dgamma_storage: tensor<{N}x{T}> {iree.abi.output = 1 : index},
    %dbeta_storage: tensor<{N}x{T}> {iree.abi.output = 2 : index},
    %transients: !hal.buffer {iree.abi.transients})
    -> (tensor<{M}x{N}x{T}>, tensor<{N}x{T}>, tensor<{N}x{T}>) {
  %mean_fused, %rstd_fused = func.call @row_statistics(%x_arg, %eps)
      : (tensor<{M}x{N}x{T}>, f32) -> (tensor<{M}x{A}>, tensor<{M}x{A}>)
  // STATS_BARRIER: with hand-set GPU schedules, an optimization barrier that
  // keeps the statistics in dispatches of their own, so the backward's row
  // dispatch and its schedule are those of @layernorm_backward; else a no-op.
  {STATS_BARRIER}
  %dx, %dgamma, %dbeta = func.call @backward_with_stats(%dy_arg, %x_arg, %gamma_arg, %mean, %rstd)
      : (tensor<{M}x{N}x{T}>, tensor<{M}x{N}x{T}>, tensor<{N}x{T}>, tensor<{M}x{A}>, tensor<{M}x{A}>)
      -> (tensor<{M}x{N}x{T}>, tensor<{N}x{T}>, tensor<{N}x{T}>)
  return %dx, %dgamma, %dbeta : tensor<{M}x{N}x{T}>, tensor<{N}x{T}>, tensor<{N}x{T}>
}

{ROW_STATISTICS}

func.func private @backward_with_stats(
    %dy_arg: tensor<{M}x{N}x{T}>, %x_arg: tensor<{M}x{N}x{T}>, %gamma_arg: tensor<{N}x{T}>,
    %mean_arg: tensor<{M}x{A}>, %rstd_arg: tensor<{M}x{A}>)
    -> (tensor<{M}x{N}x{T}>, tensor<{N}x{T}>, tensor<{N}x{T}>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %zero = arith.constant 0.0 : {A}
  // The body works on dynamic shapes; static specialisations fold through the casts.
  %dy = tensor.cast %dy_arg : tensor<{M}x{N}x{T}> to tensor<?x?x{T}>
  %x = tensor.cast %x_arg : tensor<{M}x{N}x{T}> to tensor<?x?x{T}>
  %gamma = tensor.cast %gamma_arg : tensor<{N}x{T}> to tensor<?x{T}>
  %mean = tensor.cast %mean_arg : tensor<{M}x{A}> to tensor<?x{A}>
  %rstd = tensor.cast %rstd_arg : tensor<{M}x{A}> to tensor<?x{A}>
  %m = tensor.dim %dy, %c0 : tensor<?x?x{T}>
  %n = tensor.dim %dy, %c1 : tensor<?x?x{T}>
  %n_i64 = arith.index_cast %n : index to i64
  %n_acc = arith.sitofp %n_i64 : i64 to {A}
  %one = arith.constant 1.0 : {A}
  %inv_n = arith.divf %one, %n_acc : {A}

  {GRADIENT_PASSES}

  %col_out_init = tensor.empty(%n) : tensor<?x{T}>
  %dgamma, %dbeta = linalg.generic {
      indexing_maps = [affine_map<(j) -> (j)>, affine_map<(j) -> (j)>, affine_map<(j) -> (j)>, affine_map<(j) -> (j)>],
      iterator_types = ["parallel"]}
      ins(%dgamma_acc, %dbeta_acc : tensor<?x{A}>, tensor<?x{A}>)
      outs(%col_out_init, %col_out_init : tensor<?x{T}>, tensor<?x{T}>) {
  ^bb0(%dgamma_w: {A}, %dbeta_w: {A}, %o0: {T}, %o1: {T}):
    %dgamma_s = narrow %dgamma_w
    %dbeta_s = narrow %dbeta_w
    linalg.yield %dgamma_s, %dbeta_s : {T}, {T}
  } -> (tensor<?x{T}>, tensor<?x{T}>)

  %dx_out = tensor.cast %dx : tensor<?x?x{T}> to tensor<{M}x{N}x{T}>
  %dgamma_out = tensor.cast %dgamma : tensor<?x{T}> to tensor<{N}x{T}>
  %dbeta_out = tensor.cast %dbeta : tensor<?x{T}> to tensor<{N}x{T}>
  return %dx_out, %dgamma_out, %dbeta_out : tensor<{M}x{N}x{T}>, tensor<{N}x{T}>, tensor<{N}x{T}>
}
