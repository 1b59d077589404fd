// row_statistics.mlir's statistics with each row sum in two levels
// (row_sum_blocked.mlir): the CPU design for long rows, whose plain row
// reductions are one f32 chain of N terms each.
func.func private @row_statistics(%x_arg: tensor<{M}x{N}x{T}>, %eps: f32)
    -> (tensor<{M}x{A}>, tensor<{M}x{A}>) {
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

  %first_column = tensor.extract_slice %x[0, 0] [%m, 1] [1, 1] : tensor<?x?x{T}> to tensor<?x1x{T}>
  %pivot = tensor.collapse_shape %first_column [[0, 1]] : tensor<?x1x{T}> into tensor<?x{T}>
  %terms_init = tensor.empty(%m, %n) : tensor<?x?x{A}>
  %shifted = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i)>, affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}
      ins(%x, %pivot : tensor<?x?x{T}>, tensor<?x{T}>) outs(%terms_init : tensor<?x?x{A}>) {
  ^bb0(%x_s: {T}, %pivot_s: {T}, %out: {A}):
    %x_w = widen %x_s
    %pivot_w = widen %pivot_s
    %shifted_s = arith.subf %x_w, %pivot_w : {A}
    linalg.yield %shifted_s : {A}
  } -> tensor<?x?x{A}>
  %shifted_sum = func.call @row_sum_blocked(%shifted) : (tensor<?x?x{A}>) -> tensor<?x{A}>
  %mean = linalg.generic {
      indexing_maps = [affine_map<(i) -> (i)>, affine_map<(i) -> (i)>, affine_map<(i) -> (i)>],
      iterator_types = ["parallel"]}
      ins(%shifted_sum, %pivot : tensor<?x{A}>, tensor<?x{T}>) outs(%row_init : tensor<?x{A}>) {
  ^bb0(%sum: {A}, %pivot_s: {T}, %out: {A}):
    %pivot_w = widen %pivot_s
    %shift_mean = arith.mulf %sum, %inv_n : {A}
    %mean_s = arith.addf %pivot_w, %shift_mean : {A}
    linalg.yield %mean_s : {A}
  } -> tensor<?x{A}>

  %squares = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i)>, affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}
      ins(%x, %mean : tensor<?x?x{T}>, tensor<?x{A}>) outs(%terms_init : tensor<?x?x{A}>) {
  ^bb0(%x_s: {T}, %mean_s: {A}, %out: {A}):
    %x_w = widen %x_s
    %centred = arith.subf %x_w, %mean_s : {A}
    %sq = arith.mulf %centred, %centred : {A}
    linalg.yield %sq : {A}
  } -> tensor<?x?x{A}>
  %row_sq_sum = func.call @row_sum_blocked(%squares) : (tensor<?x?x{A}>) -> tensor<?x{A}>
  %rstd = linalg.generic {
      indexing_maps = [affine_map<(i) -> (i)>, affine_map<(i) -> (i)>],
      iterator_types = ["parallel"]}
      ins(%row_sq_sum : tensor<?x{A}>) outs(%row_init : tensor<?x{A}>) {
  ^bb0(%sq_sum: {A}, %out: {A}):
    %var = arith.mulf %sq_sum, %inv_n : {A}
    %var_eps = arith.addf %var, %eps_acc : {A}
    %rstd_s = math.rsqrt %var_eps : {A}
    linalg.yield %rstd_s : {A}
  } -> tensor<?x{A}>

  %mean_out = tensor.cast %mean : tensor<?x{A}> to tensor<{M}x{A}>
  %rstd_out = tensor.cast %rstd : tensor<?x{A}> to tensor<{M}x{A}>
  return %mean_out, %rstd_out : tensor<{M}x{A}>, tensor<{M}x{A}>
}

{ROW_SUM_BLOCKED}
