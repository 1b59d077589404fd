  // Included by rmsnorm_row_block_pass.mlir and rms_column_sums_blocked.mlir:
  // %dgamma_acc from the {G} blocks' partial sums %dgamma_parts [G, N].
  // PARTIAL_SUM_CONFIG, as in column_sums_two_results.mlir: threads split the
  // G rows, 16 bytes of columns each (or empty: IREE's choice).
  %col_init = tensor.empty(%n) : tensor<?x{A}>
  %col_zero = linalg.fill ins(%zero : {A}) outs(%col_init : tensor<?x{A}>) -> tensor<?x{A}>
  %dgamma_acc = linalg.generic {
      indexing_maps = [affine_map<(c, g) -> (g, c)>, affine_map<(c, g) -> (c)>],
      iterator_types = ["parallel", "reduction"]{PARTIAL_SUM_CONFIG}}
      ins(%dgamma_parts : tensor<{G}x?x{A}>) outs(%col_zero : tensor<?x{A}>) {
  ^bb0(%part: {A}, %acc: {A}):
    %sum = arith.addf %acc, %part : {A}
    linalg.yield %sum : {A}
  } -> tensor<?x{A}>
