// Sums each row of %terms in two levels: blocks of 1024 terms, then the
// blocks' sums, then the tail past the last whole block onto that. No f32
// chain is longer than max(1024, N / 1024) terms, where a plain row
// reduction on the CPU is one chain of N terms (docs/performance.md, "Long
// rows in f32").
func.func private @row_sum_blocked(%terms: tensor<?x?x{A}>) -> tensor<?x{A}> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %block = arith.constant 1024 : index
  %zero = arith.constant 0.0 : {A}
  %m = tensor.dim %terms, %c0 : tensor<?x?x{A}>
  %n = tensor.dim %terms, %c1 : tensor<?x?x{A}>
  %blocks_per_row = arith.divui %n, %block : index
  %whole = arith.muli %blocks_per_row, %block : index
  %tail_n = arith.subi %n, %whole : index
  %main = tensor.extract_slice %terms[0, 0] [%m, %whole] [1, 1] : tensor<?x?x{A}> to tensor<?x?x{A}>
  %blocks = tensor.expand_shape %main [[0], [1, 2]] output_shape [%m, %blocks_per_row, 1024]
      : tensor<?x?x{A}> into tensor<?x?x1024x{A}>
  %block_init = tensor.empty(%m, %blocks_per_row) : tensor<?x?x{A}>
  %block_zero = linalg.fill ins(%zero : {A}) outs(%block_init : tensor<?x?x{A}>) -> tensor<?x?x{A}>
  %block_sums = linalg.generic {
      indexing_maps = [affine_map<(i, b, k) -> (i, b, k)>, affine_map<(i, b, k) -> (i, b)>],
      iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%blocks : tensor<?x?x1024x{A}>) outs(%block_zero : tensor<?x?x{A}>) {
  ^bb0(%t: {A}, %acc: {A}):
    %sum = arith.addf %acc, %t : {A}
    linalg.yield %sum : {A}
  } -> tensor<?x?x{A}>
  %row_init = tensor.empty(%m) : tensor<?x{A}>
  %row_zero = linalg.fill ins(%zero : {A}) outs(%row_init : tensor<?x{A}>) -> tensor<?x{A}>
  %whole_sums = linalg.generic {
      indexing_maps = [affine_map<(i, b) -> (i, b)>, affine_map<(i, b) -> (i)>],
      iterator_types = ["parallel", "reduction"]}
      ins(%block_sums : tensor<?x?x{A}>) outs(%row_zero : tensor<?x{A}>) {
  ^bb0(%t: {A}, %acc: {A}):
    %sum = arith.addf %acc, %t : {A}
    linalg.yield %sum : {A}
  } -> tensor<?x{A}>
  %tail = tensor.extract_slice %terms[0, %whole] [%m, %tail_n] [1, 1] : tensor<?x?x{A}> to tensor<?x?x{A}>
  %sums = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i)>],
      iterator_types = ["parallel", "reduction"]}
      ins(%tail : tensor<?x?x{A}>) outs(%whole_sums : tensor<?x{A}>) {
  ^bb0(%t: {A}, %acc: {A}):
    %sum = arith.addf %acc, %t : {A}
    linalg.yield %sum : {A}
  } -> tensor<?x{A}>
  return %sums : tensor<?x{A}>
}
