  // Included by column_sums_blocked.mlir (CPUs, dynamic N, or [2, N, G]
  // partials, whose final sum reads contiguous rows of G: IREE's fast row
  // reduction): dbeta and dgamma from %partials in one op, one dispatch.
  %col_init = tensor.empty(%n) : tensor<2x?x{A}>
  %col_zero = linalg.fill ins(%zero : {A}) outs(%col_init : tensor<2x?x{A}>) -> tensor<2x?x{A}>
  %col_sums = linalg.generic {
      indexing_maps = [affine_map<(k, j, g) -> {PARTIAL_INDEX}>, affine_map<(k, j, g) -> (k, j)>],
      iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%partials : tensor<{PARTIALS}>) outs(%col_zero : tensor<2x?x{A}>) {
  ^bb0(%part: {A}, %acc: {A}):
    %sum = arith.addf %acc, %part : {A}
    linalg.yield %sum : {A}
  } -> tensor<2x?x{A}>
  %dbeta_acc = tensor.extract_slice %col_sums[0, 0] [1, %n] [1, 1] : tensor<2x?x{A}> to tensor<?x{A}>
  %dgamma_acc = tensor.extract_slice %col_sums[1, 0] [1, %n] [1, 1] : tensor<2x?x{A}> to tensor<?x{A}>
