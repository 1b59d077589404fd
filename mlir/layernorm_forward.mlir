// LayerNorm-2D forward: Y = (X - mean) * rstd * gamma + beta over rows of
// length N, returning the statistics mean and rstd that the backward consumes.
// Results and scratch space are the caller's, as in layernorm_backward.mlir.
// Template fields as in layernorm_backward.mlir.

func.func @layernorm_forward(
    %x_arg: tensor<{M}x{N}x{T}>, %gamma_arg: tensor<{N}x{T}>, %beta_arg: tensor<{N}x{T}>, %eps: f32,
    %y_storage: tensor<{M}x{N}x{T}> {iree.abi.output = 0 : index},
    %mean_storage: tensor<{M}x{A}> {iree.abi.output = 1 : index},
    %rstd_storage: tensor<{M}x{A}> {iree.abi.output = 2 : index},
    %transients: !hal.buffer {iree.abi.transients})
    -> (tensor<{M}x{N}x{T}>, tensor<{M}x{A}>, tensor<{M}x{A}>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %mean_stat, %rstd_stat = func.call @row_statistics(%x_arg, %eps)
      : (tensor<{M}x{N}x{T}>, f32) -> (tensor<{M}x{A}>, tensor<{M}x{A}>)
  %x = tensor.cast %x_arg : tensor<{M}x{N}x{T}> to tensor<?x?x{T}>
  %gamma = tensor.cast %gamma_arg : tensor<{N}x{T}> to tensor<?x{T}>
  %beta = tensor.cast %beta_arg : tensor<{N}x{T}> to tensor<?x{T}>
  %mean = tensor.cast %mean_stat : tensor<{M}x{A}> to tensor<?x{A}>
  %rstd = tensor.cast %rstd_stat : tensor<{M}x{A}> to tensor<?x{A}>
  %m = tensor.dim %x, %c0 : tensor<?x?x{T}>
  %n = tensor.dim %x, %c1 : tensor<?x?x{T}>
  %y_init = tensor.empty(%m, %n) : tensor<?x?x{T}>
  %y = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (j)>, affine_map<(i, j) -> (j)>,
                       affine_map<(i, j) -> (i)>, affine_map<(i, j) -> (i)>, affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]{FORWARD_Y_CONFIG}}
      ins(%x, %gamma, %beta, %mean, %rstd : tensor<?x?x{T}>, tensor<?x{T}>, tensor<?x{T}>, tensor<?x{A}>, tensor<?x{A}>)
      outs(%y_init : tensor<?x?x{T}>) {
  ^bb0(%x_s: {T}, %gamma_s: {T}, %beta_s: {T}, %mean_s: {A}, %rstd_s: {A}, %out: {T}):
    %x_w = widen %x_s
    %gamma_w = widen %gamma_s
    %beta_w = widen %beta_s
    %centred = arith.subf %x_w, %mean_s : {A}
    %xhat = arith.mulf %centred, %rstd_s : {A}
    %scaled = arith.mulf %xhat, %gamma_w : {A}
    %y_w = arith.addf %scaled, %beta_w : {A}
    %y_s = narrow %y_w
    linalg.yield %y_s : {T}
  } -> tensor<?x?x{T}>
  %y_out = tensor.cast %y : tensor<?x?x{T}> to tensor<{M}x{N}x{T}>
  return %y_out, %mean_stat, %rstd_stat : tensor<{M}x{N}x{T}>, tensor<{M}x{A}>, tensor<{M}x{A}>
}

{ROW_STATISTICS}
