// LayerNorm's per-row terms of the column sums (row_block_pass.mlir), ROW_BLOCK_TERMS_CONFIG.
    %terms = transform.structured.match attributes{lnbwd_role = "terms"} in %func : (!transform.any_op) -> !transform.any_op
    %terms_config = transform.param.constant {ROW_BLOCK_TERMS_CONFIG} -> !transform.any_param
    transform.annotate %terms "lowering_config" = %terms_config : !transform.any_op, !transform.any_param
