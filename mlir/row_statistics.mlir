// Per-row mean and rstd = 1/sqrt(var + eps) of X, shared by the forward and by
// the backward that recomputes its statistics. Accurate in f32 when a row sits
// on a large common offset: the mean sums x - x[i, 0] (small terms, so the f32
// sum loses little) and the variance is the centred sum of squares, never
// E[x^2] - E[x]^2, which would cancel catastrophically.
func.func private @row_statistics(%x_arg: tensor<{M}x{N}x{T}>, %eps: f32)
    -> (tensor<{M}xf32>, tensor<{M}xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %zero = arith.constant 0.0 : f32
  %one = arith.constant 1.0 : f32
  %x = tensor.cast %x_arg : tensor<{M}x{N}x{T}> to tensor<?x?x{T}>
  %m = tensor.dim %x, %c0 : tensor<?x?x{T}>
  %n = tensor.dim %x, %c1 : tensor<?x?x{T}>
  %n_i64 = arith.index_cast %n : index to i64
  %n_f32 = arith.sitofp %n_i64 : i64 to f32
  %inv_n = arith.divf %one, %n_f32 : f32
  %row_init = tensor.empty(%m) : tensor<?xf32>
  %row_zero = linalg.fill ins(%zero : f32) outs(%row_init : tensor<?xf32>) -> tensor<?xf32>

  %first_column = tensor.extract_slice %x[0, 0] [%m, 1] [1, 1] : tensor<?x?x{T}> to tensor<?x1x{T}>
  %pivot = tensor.collapse_shape %first_column [[0, 1]] : tensor<?x1x{T}> into tensor<?x{T}>
  %shifted_sum = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i)>, affine_map<(i, j) -> (i)>],
      iterator_types = ["parallel", "reduction"]}
      ins(%x, %pivot : tensor<?x?x{T}>, tensor<?x{T}>) outs(%row_zero : tensor<?xf32>) {
  ^bb0(%x_s: {T}, %pivot_s: {T}, %acc: f32):
    %x_w = widen %x_s
    %pivot_w = widen %pivot_s
    %shifted = arith.subf %x_w, %pivot_w : f32
    %sum = arith.addf %acc, %shifted : f32
    linalg.yield %sum : f32
  } -> tensor<?xf32>
  %mean = linalg.generic {
      indexing_maps = [affine_map<(i) -> (i)>, affine_map<(i) -> (i)>, affine_map<(i) -> (i)>],
      iterator_types = ["parallel"]}
      ins(%shifted_sum, %pivot : tensor<?xf32>, tensor<?x{T}>) outs(%row_init : tensor<?xf32>) {
  ^bb0(%sum: f32, %pivot_s: {T}, %out: f32):
    %pivot_w = widen %pivot_s
    %shift_mean = arith.mulf %sum, %inv_n : f32
    %mean_s = arith.addf %pivot_w, %shift_mean : f32
    linalg.yield %mean_s : f32
  } -> tensor<?xf32>

  %row_sq_sum = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i)>, affine_map<(i, j) -> (i)>],
      iterator_types = ["parallel", "reduction"]}
      ins(%x, %mean : tensor<?x?x{T}>, tensor<?xf32>) outs(%row_zero : tensor<?xf32>) {
  ^bb0(%x_s: {T}, %mean_s: f32, %acc: f32):
    %x_w = widen %x_s
    %centred = arith.subf %x_w, %mean_s : f32
    %sq = arith.mulf %centred, %centred : f32
    %sum = arith.addf %acc, %sq : f32
    linalg.yield %sum : f32
  } -> tensor<?xf32>
  %rstd = linalg.generic {
      indexing_maps = [affine_map<(i) -> (i)>, affine_map<(i) -> (i)>],
      iterator_types = ["parallel"]}
      ins(%row_sq_sum : tensor<?xf32>) outs(%row_init : tensor<?xf32>) {
  ^bb0(%sq_sum: f32, %out: f32):
    %var = arith.mulf %sq_sum, %inv_n : f32
    %var_eps = arith.addf %var, %eps : f32
    %rstd_s = math.rsqrt %var_eps : f32
    linalg.yield %rstd_s : f32
  } -> tensor<?xf32>

  %mean_out = tensor.cast %mean : tensor<?xf32> to tensor<{M}xf32>
  %rstd_out = tensor.cast %rstd : tensor<?xf32> to tensor<{M}xf32>
  return %mean_out, %rstd_out : tensor<{M}xf32>, tensor<{M}xf32>
}
