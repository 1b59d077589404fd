// rms_statistics.mlir's rstd with the row sum of squares in two levels
// (row_sum_blocked.mlir): the CPU design for long rows.
func.func private @rms_statistics(%x_arg: tensor<{M}x{N}x{T}>, %eps: f32) -> tensor<{M}x{A}> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %zero = arith.constant 0.0 : {A}
  %one = arith.constant 1.0 : {A}
  %x = tensor.cast %x_arg : tensor<{M}x{N}x{T}> to tensor<?x?x{T}>
  %m = tensor.dim %x, %c0 : tensor<?x?x{T}>
  %n = tensor.dim %x, %c1 : tensor<?x?x{T}>
  %n_i64 = arith.index_cast %n : index to i64
  %n_acc = arith.sitofp %n_i64 : i64 to {A}
  %inv_n = arith.divf %one, %n_acc : {A}
  %eps_acc = from_f32 %eps
  %row_init = tensor.empty(%m) : tensor<?x{A}>
  %terms_init = tensor.empty(%m, %n) : tensor<?x?x{A}>
  %squares = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}
      ins(%x : tensor<?x?x{T}>) outs(%terms_init : tensor<?x?x{A}>) {
  ^bb0(%x_s: {T}, %out: {A}):
    %x_w = widen %x_s
    %sq = arith.mulf %x_w, %x_w : {A}
    linalg.yield %sq : {A}
  } -> tensor<?x?x{A}>
  %sq_sum = func.call @row_sum_blocked(%squares) : (tensor<?x?x{A}>) -> tensor<?x{A}>
  %rstd = linalg.generic {
      indexing_maps = [affine_map<(i) -> (i)>, affine_map<(i) -> (i)>],
      iterator_types = ["parallel"]}
      ins(%sq_sum : tensor<?x{A}>) outs(%row_init : tensor<?x{A}>) {
  ^bb0(%sq_sum_s: {A}, %out: {A}):
    %mean_sq = arith.mulf %sq_sum_s, %inv_n : {A}
    %mean_sq_eps = arith.addf %mean_sq, %eps_acc : {A}
    %rstd_s = math.rsqrt %mean_sq_eps : {A}
    linalg.yield %rstd_s : {A}
  } -> tensor<?x{A}>
  %rstd_out = tensor.cast %rstd : tensor<?x{A}> to tensor<{M}x{A}>
  return %rstd_out : tensor<{M}x{A}>
}

{ROW_SUM_BLOCKED}
