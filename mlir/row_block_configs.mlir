// Transform library for the one-pass backwards (row_block_pass.mlir,
// rmsnorm_row_block_pass.mlir), given to iree-compile as
// --iree-codegen-transform-dialect-library=FILE@__kernel_config.
//
// The partial-sums op's translation_info names a textual pass pipeline
// (lnbwd_iree/row_block_pipeline.py) so that its row loop becomes an scf.for
// with the partials in registers. For such a pipeline IREE copies the
// first op's lowering config onto every op of the dispatch; that config
// names @lnbwd_row_block_configs, which the pipeline's first pass
// (iree-codegen-lowering-config-interpreter) applies to put each op's own
// config back, finding the ops by their lnbwd_role attribute:
//   row: the row sums and dX, ROW_BLOCK_ROW_CONFIG (a row over the workgroup's threads);
//   zero: the partials' zero init, ROW_BLOCK_ZERO_CONFIG;
//   terms: LayerNorm's per-row terms of those sums (ROW_BLOCK_TERMS:
//   row_block_terms_config.mlir; empty for RMSNorm, whose partial sums read
//   their inputs);
//   partials: the block's partial column sums, ROW_BLOCK_PARTIAL_TILES;
//   fill: the row sums' zero init, which takes no config (a unit attribute
//   in its place reads as none).
module @lnbwd_row_block attributes {transform.with_named_sequence} {
  transform.named_sequence @lnbwd_row_block_configs(%op: !transform.any_op {transform.readonly}) {
    %func = transform.get_parent_op %op <{op_name = "func.func"}> : (!transform.any_op) -> !transform.any_op
    %row = transform.structured.match attributes{lnbwd_role = "row"} in %func : (!transform.any_op) -> !transform.any_op
    %row_config = transform.param.constant {ROW_BLOCK_ROW_CONFIG} -> !transform.any_param
    transform.annotate %row "lowering_config" = %row_config : !transform.any_op, !transform.any_param
    %zero = transform.structured.match attributes{lnbwd_role = "zero"} in %func : (!transform.any_op) -> !transform.any_op
    %zero_config = transform.param.constant {ROW_BLOCK_ZERO_CONFIG} -> !transform.any_param
    transform.annotate %zero "lowering_config" = %zero_config : !transform.any_op, !transform.any_param
    %partials = transform.structured.match attributes{lnbwd_role = "partials"} in %func : (!transform.any_op) -> !transform.any_op
    %partial_config = transform.param.constant {ROW_BLOCK_PARTIAL_TILES} -> !transform.any_param
    transform.annotate %partials "lowering_config" = %partial_config : !transform.any_op, !transform.any_param
    {ROW_BLOCK_TERMS}
    %fill = transform.structured.match attributes{lnbwd_role = "fill"} in %func : (!transform.any_op) -> !transform.any_op
    transform.annotate %fill "lowering_config" : !transform.any_op
    transform.yield
  }

  // Run by MaterializeUserConfigs on every dispatch function: attaches the
  // strategy above, where the interpreter pass looks for it.
  transform.named_sequence @__kernel_config(%func: !transform.any_op {transform.readonly}) -> !transform.any_op
      attributes {iree_codegen.tuning_spec_entrypoint} {
    %symbols = transform.util.create_serialized_module {
      ^bb0(%module: !transform.any_op):
        transform.util.import_symbol @lnbwd_row_block_configs into %module if undefined : (!transform.any_op) -> !transform.any_op
        transform.annotate %module "transform.with_named_sequence" : !transform.any_op
    } -> !transform.any_param
    transform.annotate %func "iree_codegen_external_symbols" = %symbols : !transform.any_op, !transform.any_param
    transform.yield %func : !transform.any_op
  }
}
