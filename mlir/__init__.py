"""The MLIR templates, shipped as package data of lnbwd_iree."""
