// LayerNorm-2D backward: dX, dgamma, dbeta from dY, X, gamma and the forward's
// saved statistics mean and rstd = 1/sqrt(var + eps), all rows of length N.
//
// A template (lnbwd_iree/template.py fills its upper-case fields in braces):
// T is the storage type of dY, X, gamma, dX, dgamma, dbeta (f32, f16, bf16,
// or f64 on CPUs); A the arithmetic type, also that of mean and rstd (f64
// for f64 storage, else f32); M and N are static dims or "?"; COLUMN_SUMS
// names the file that computes %dgamma_acc and %dbeta_acc
// (column_sums_direct.mlir, or column_sums_blocked.mlir for static M);
// ROW_*_CONFIG are hand-set GPU schedules for the fused row dispatch, or
// empty. `%a = widen %b` / `%a = narrow %b` lines convert T to A and back,
// and vanish when T is A; `%a = from_f32 %b` converts the f32 eps to A.
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

  %row_init = tensor.empty(%m) : tensor<?x{A}>
  %row_zero = linalg.fill ins(%zero : {A}) outs(%row_init : tensor<?x{A}>) -> tensor<?x{A}>

  // Per-row sum of gamma * dY. One reduction output per generic: GPU
  // bufferization rejects generics with two reduction outputs.
  %row_sum_g = linalg.generic {
      indexing_maps = [#rows_cols, #cols, #rows],
      iterator_types = ["parallel", "reduction"]{ROW_SUM_CONFIG}}
      ins(%dy, %gamma : tensor<?x?x{T}>, tensor<?x{T}>) outs(%row_zero : tensor<?x{A}>) {
  ^bb0(%dy_s: {T}, %gamma_s: {T}, %acc: {A}):
    %dy_w = widen %dy_s
    %gamma_w = widen %gamma_s
    %g = arith.mulf %gamma_w, %dy_w : {A}
    %sum = arith.addf %acc, %g : {A}
    linalg.yield %sum : {A}
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
  ^bb0(%dy_s: {T}, %x_s: {T}, %gamma_s: {T}, %mean_s: {A}, %rstd_s: {A}, %sum_g: {A}, %acc: {A}):
    %dy_w = widen %dy_s
    %x_w = widen %x_s
    %gamma_w = widen %gamma_s
    %centred = arith.subf %x_w, %mean_s : {A}
    %xhat = arith.mulf %centred, %rstd_s : {A}
    %g = arith.mulf %gamma_w, %dy_w : {A}
    %mean_g = arith.mulf %sum_g, %inv_n : {A}
    %g_c = arith.subf %g, %mean_g : {A}
    %gc_xhat = arith.mulf %g_c, %xhat : {A}
    %sum = arith.addf %acc, %gc_xhat : {A}
    linalg.yield %sum : {A}
  } -> tensor<?x{A}>

  %dx_init = tensor.empty(%m, %n) : tensor<?x?x{T}>
  %dx = linalg.generic {
      indexing_maps = [#rows_cols, #rows_cols, #cols, #rows, #rows, #rows, #rows, #rows_cols],
      iterator_types = ["parallel", "parallel"]{ROW_DX_CONFIG}}
      ins(%dy, %x, %gamma, %mean, %rstd, %row_sum_g, %row_sum_gc_xhat
          : tensor<?x?x{T}>, tensor<?x?x{T}>, tensor<?x{T}>, tensor<?x{A}>, tensor<?x{A}>, tensor<?x{A}>, tensor<?x{A}>)
      outs(%dx_init : tensor<?x?x{T}>) {
  ^bb0(%dy_s: {T}, %x_s: {T}, %gamma_s: {T}, %mean_s: {A}, %rstd_s: {A}, %sum_g: {A}, %sum_gc_xhat: {A}, %out: {T}):
    %dy_w = widen %dy_s
    %x_w = widen %x_s
    %gamma_w = widen %gamma_s
    %centred = arith.subf %x_w, %mean_s : {A}
    %xhat = arith.mulf %centred, %rstd_s : {A}
    %g = arith.mulf %gamma_w, %dy_w : {A}
    %mean_g = arith.mulf %sum_g, %inv_n : {A}
    %mean_g_xhat = arith.mulf %sum_gc_xhat, %inv_n : {A}
    %t0 = arith.subf %g, %mean_g : {A}
    %t1 = arith.mulf %xhat, %mean_g_xhat : {A}
    %t2 = arith.subf %t0, %t1 : {A}
    %dx_w = arith.mulf %t2, %rstd_s : {A}
    %dx_s = narrow %dx_w
    linalg.yield %dx_s : {T}
  } -> tensor<?x?x{T}>

  {COLUMN_SUMS}

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
