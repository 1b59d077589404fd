  // Included by row_block_pass.mlir and, on GPUs with [G, 2, N] partials,
  // by column_sums_blocked.mlir: dbeta and dgamma from the {G} blocks'
  // partial column sums %partials [G, 2, N], in one op with two results:
  // one dispatch (two single-result ops took two, ~6 us each, mostly
  // launch and drain), and each result is written to its caller's buffer
  // directly (one [2, N] result would be copied out in two halves). It reads
  // the two [G, N] slices as matrices, since IREE keeps a 2-D op's schedule
  // (a 3-D op over [G, 2, N] was collapsed and lost it).
  // PARTIAL_SUM_CONFIG: threads split the G rows, 16 bytes of columns each.
  %col_init = tensor.empty(%n) : tensor<?x{A}>
  %col_zero = linalg.fill ins(%zero : {A}) outs(%col_init : tensor<?x{A}>) -> tensor<?x{A}>
  %dbeta_parts = tensor.extract_slice %partials[0, 0, 0] [{G}, 1, %n] [1, 1, 1] : tensor<{PARTIALS}> to tensor<{G}x?x{A}>
  %dgamma_parts = tensor.extract_slice %partials[0, 1, 0] [{G}, 1, %n] [1, 1, 1] : tensor<{PARTIALS}> to tensor<{G}x?x{A}>
  %dbeta_acc, %dgamma_acc = linalg.generic {
      indexing_maps = [affine_map<(c, g) -> (g, c)>, affine_map<(c, g) -> (g, c)>,
                       affine_map<(c, g) -> (c)>, affine_map<(c, g) -> (c)>],
      iterator_types = ["parallel", "reduction"]{PARTIAL_SUM_CONFIG}}
      ins(%dbeta_parts, %dgamma_parts : tensor<{G}x?x{A}>, tensor<{G}x?x{A}>)
      outs(%col_zero, %col_zero : tensor<?x{A}>, tensor<?x{A}>) {
  ^bb0(%dbeta_part: {A}, %dgamma_part: {A}, %dbeta_sum: {A}, %dgamma_sum: {A}):
    %dbeta_next = arith.addf %dbeta_sum, %dbeta_part : {A}
    %dgamma_next = arith.addf %dgamma_sum, %dgamma_part : {A}
    linalg.yield %dbeta_next, %dgamma_next : {A}, {A}
  } -> (tensor<?x{A}>, tensor<?x{A}>)
