// row_statistics.mlir's statistics with each row sum in two levels
// (row_sum_blocked.mlir) and the mean corrected: the CPU design for long
// rows, whose plain row reductions are one f32 chain of N terms each.
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
  %mean_estimate = linalg.generic {
      indexing_maps = [affine_map<(i) -> (i)>, affine_map<(i) -> (i)>, affine_map<(i) -> (i)>],
      iterator_types = ["parallel"]}
      ins(%shifted_sum, %pivot : tensor<?x{A}>, tensor<?x{T}>) outs(%row_init : tensor<?x{A}>) {
  ^bb0(%sum: {A}, %pivot_s: {T}, %out: {A}):
    %pivot_w = widen %pivot_s
    %shift_mean = arith.mulf %sum, %inv_n : {A}
    %mean_s = arith.addf %pivot_w, %shift_mean : {A}
    linalg.yield %mean_s : {A}
  } -> tensor<?x{A}>

  // The corrected two-pass statistics: the deviations d = x - estimate and
  // their squares summed together, mean = estimate + sum(d)/N and
  // var = sum(d^2)/N - (sum(d)/N)^2. The estimate's own rounding (its shifted
  // sum adds -x[i, 0] to every term, large on centred rows) is corrected.
  %deviations = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i)>, affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}
      ins(%x, %mean_estimate : tensor<?x?x{T}>, tensor<?x{A}>) outs(%terms_init : tensor<?x?x{A}>) {
  ^bb0(%x_s: {T}, %estimate_s: {A}, %out: {A}):
    %x_w = widen %x_s
    %d = arith.subf %x_w, %estimate_s : {A}
    linalg.yield %d : {A}
  } -> tensor<?x?x{A}>
  %squares = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i)>, affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}
      ins(%x, %mean_estimate : tensor<?x?x{T}>, tensor<?x{A}>) outs(%terms_init : tensor<?x?x{A}>) {
  ^bb0(%x_s: {T}, %estimate_s: {A}, %out: {A}):
    %x_w = widen %x_s
    %d = arith.subf %x_w, %estimate_s : {A}
    %sq = arith.mulf %d, %d : {A}
    linalg.yield %sq : {A}
  } -> tensor<?x?x{A}>
  %deviation_sum = func.call @row_sum_blocked(%deviations) : (tensor<?x?x{A}>) -> tensor<?x{A}>
  %row_sq_sum = func.call @row_sum_blocked(%squares) : (tensor<?x?x{A}>) -> tensor<?x{A}>
  %mean = linalg.generic {
      indexing_maps = [affine_map<(i) -> (i)>, affine_map<(i) -> (i)>, affine_map<(i) -> (i)>],
      iterator_types = ["parallel"]}
      ins(%mean_estimate, %deviation_sum : tensor<?x{A}>, tensor<?x{A}>) outs(%row_init : tensor<?x{A}>) {
  ^bb0(%estimate_s: {A}, %d_sum: {A}, %out: {A}):
    %correction = arith.mulf %d_sum, %inv_n : {A}
    %mean_s = arith.addf %estimate_s, %correction : {A}
    linalg.yield %mean_s : {A}
  } -> tensor<?x{A}>
  %rstd = linalg.generic {
      indexing_maps = [affine_map<(i) -> (i)>, affine_map<(i) -> (i)>, affine_map<(i) -> (i)>],
      iterator_types = ["parallel"]}
      ins(%row_sq_sum, %deviation_sum : tensor<?x{A}>, tensor<?x{A}>) outs(%row_init : tensor<?x{A}>) {
  ^bb0(%sq_sum: {A}, %d_sum: {A}, %out: {A}):
    %mean_sq = arith.mulf %sq_sum, %inv_n : {A}
    %correction = arith.mulf %d_sum, %inv_n : {A}
    %correction_sq = arith.mulf %correction, %correction : {A}
    %var = arith.subf %mean_sq, %correction_sq : {A}
    %var_eps = arith.addf %var, %eps_acc : {A}
    %rstd_s = math.rsqrt %var_eps : {A}
    linalg.yield %rstd_s : {A}
  } -> tensor<?x{A}>

  %mean_out = tensor.cast %mean : tensor<?x{A}> to tensor<{M}x{A}>
  %rstd_out = tensor.cast %rstd : tensor<?x{A}> to tensor<{M}x{A}>
  return %mean_out, %rstd_out : tensor<{M}x{A}>, tensor<{M}x{A}>
}

{ROW_SUM_BLOCKED}
