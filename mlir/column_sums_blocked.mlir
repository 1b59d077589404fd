  // Included by layernorm_backward.mlir for static M = {G} * {R}: dbeta and
  // dgamma in two stages. Each of {G} blocks of {R} rows sums its columns
  // ({G} * N independent sums, each reading down a column, coalesced across
  // j), then a small reduction adds the {G} partials. A single reduction over
  // all M rows leaves a GPU with only N sums to spread over its threads.
  // The partial sums iterate (g, j, r) with the reduction innermost, as IREE
  // would reorder them anyway; on GPU targets PARTIAL_CONFIG pins a schedule
  // in which each thread owns a 16-byte run of columns and walks down its
  // rows serially, so every warp load is one coalesced row segment; on
  // llvm-cpu one in which each vector step reads 64 contiguous columns of
  // one row.
  %dy_rows = tensor.cast %dy : tensor<?x?x{T}> to tensor<{M}x?x{T}>
  %x_rows = tensor.cast %x : tensor<?x?x{T}> to tensor<{M}x?x{T}>
  %mean_rows = tensor.cast %mean : tensor<?x{A}> to tensor<{M}x{A}>
  %rstd_rows = tensor.cast %rstd : tensor<?x{A}> to tensor<{M}x{A}>
  %dy_blocks = tensor.expand_shape %dy_rows [[0, 1], [2]] output_shape [{G}, {R}, %n] : tensor<{M}x?x{T}> into tensor<{G}x{R}x?x{T}>
  %x_blocks = tensor.expand_shape %x_rows [[0, 1], [2]] output_shape [{G}, {R}, %n] : tensor<{M}x?x{T}> into tensor<{G}x{R}x?x{T}>
  %mean_blocks = tensor.expand_shape %mean_rows [[0, 1]] output_shape [{G}, {R}] : tensor<{M}x{A}> into tensor<{G}x{R}x{A}>
  %rstd_blocks = tensor.expand_shape %rstd_rows [[0, 1]] output_shape [{G}, {R}] : tensor<{M}x{A}> into tensor<{G}x{R}x{A}>
  // Both partial sums in one op: k = 0 sums dY (dbeta), k = 1 sums dY * x_hat
  // (dgamma). The GPU schedule gives both k of a column to one thread, so
  // each dY and X element is loaded once for the two sums.
  // PARTIALS is the partials' layout, indexed (g, k, j) -> PARTIAL_INDEX:
  // [G, 2, N] keeps this op's writes coalesced; [2, N, G] makes the final sum
  // read contiguous rows of G (a row reduction, IREE's fast case) at the cost
  // of strided writes here. kernels.py picks by measured cost.
  %partial_init = tensor.empty(%n) : tensor<{PARTIALS}>
  %partial_zero = linalg.fill ins(%zero : {A}) outs(%partial_init : tensor<{PARTIALS}>) -> tensor<{PARTIALS}>
  %partials = linalg.generic {
      indexing_maps = [affine_map<(g, k, j, r) -> (g, r, j)>, affine_map<(g, k, j, r) -> (g, r, j)>,
                       affine_map<(g, k, j, r) -> (g, r)>, affine_map<(g, k, j, r) -> (g, r)>,
                       affine_map<(g, k, j, r) -> {PARTIAL_INDEX}>],
      iterator_types = ["parallel", "parallel", "parallel", "reduction"]{PARTIAL_CONFIG}}
      ins(%dy_blocks, %x_blocks, %mean_blocks, %rstd_blocks : tensor<{G}x{R}x?x{T}>, tensor<{G}x{R}x?x{T}>, tensor<{G}x{R}x{A}>, tensor<{G}x{R}x{A}>)
      outs(%partial_zero : tensor<{PARTIALS}>) {
  ^bb0(%dy_s: {T}, %x_s: {T}, %mean_s: {A}, %rstd_s: {A}, %acc: {A}):
    %k = linalg.index 1 : index
    %is_dgamma = arith.cmpi eq, %k, %c1 : index
    %dy_w = widen %dy_s
    %x_w = widen %x_s
    %centred = arith.subf %x_w, %mean_s : {A}
    %xhat = arith.mulf %centred, %rstd_s : {A}
    %dy_xhat = arith.mulf %dy_w, %xhat : {A}
    %term = arith.select %is_dgamma, %dy_xhat, %dy_w : {A}
    %sum = arith.addf %acc, %term : {A}
    linalg.yield %sum : {A}
  } -> tensor<{PARTIALS}>
  // The sum of the {G} partials: column_sums_two_results.mlir or column_sums_joint.mlir.
  {FINAL_SUMS}
