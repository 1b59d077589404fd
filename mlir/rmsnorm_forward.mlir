// RMSNorm-2D forward: Y = X * rstd * gamma over rows of length N, with
// rstd = 1/sqrt(mean_j(x^2) + eps), returning rstd for the backward. Results
// and scratch space are the caller's, as in layernorm_backward.mlir. Fields:
// T, A, M, N as there; RMS_SQ_SUM_CONFIG and RMS_Y_CONFIG are hand-set GPU
// schedules of the row reduction and of Y (ops/rmsnorm.py), or empty.

func.func @rmsnorm_forward(
    %x_arg: tensor<{M}x{N}x{T}>, %gamma_arg: tensor<{N}x{T}>, %eps: f32,
    %y_storage: tensor<{M}x{N}x{T}> {iree.abi.output = 0 : index},
    %rstd_storage: tensor<{M}x{A}> {iree.abi.output = 1 : index},
    %transients: !hal.buffer {iree.abi.transients})
    -> (tensor<{M}x{N}x{T}>, tensor<{M}x{A}>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %rstd_stat = func.call @rms_statistics(%x_arg, %eps) : (tensor<{M}x{N}x{T}>, f32) -> tensor<{M}x{A}>
  %x = tensor.cast %x_arg : tensor<{M}x{N}x{T}> to tensor<?x?x{T}>
  %gamma = tensor.cast %gamma_arg : tensor<{N}x{T}> to tensor<?x{T}>
  %rstd = tensor.cast %rstd_stat : tensor<{M}x{A}> to tensor<?x{A}>
  %m = tensor.dim %x, %c0 : tensor<?x?x{T}>
  %n = tensor.dim %x, %c1 : tensor<?x?x{T}>
  %y_init = tensor.empty(%m, %n) : tensor<?x?x{T}>
  %y = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (j)>, affine_map<(i, j) -> (i)>,
                       affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]{RMS_Y_CONFIG}}
      ins(%x, %gamma, %rstd : tensor<?x?x{T}>, tensor<?x{T}>, tensor<?x{A}>)
      outs(%y_init : tensor<?x?x{T}>) {
  ^bb0(%x_s: {T}, %gamma_s: {T}, %rstd_s: {A}, %out: {T}):
    %x_w = widen %x_s
    %gamma_w = widen %gamma_s
    %xhat = arith.mulf %x_w, %rstd_s : {A}
    %y_w = arith.mulf %xhat, %gamma_w : {A}
    %y_s = narrow %y_w
    linalg.yield %y_s : {T}
  } -> tensor<?x?x{T}>
  %y_out = tensor.cast %y : tensor<?x?x{T}> to tensor<{M}x{N}x{T}>
  return %y_out, %rstd_stat : tensor<{M}x{N}x{T}>, tensor<{M}x{A}>
}

{RMS_STATISTICS}
