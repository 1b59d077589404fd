"""One module per op: its kernels (``lnbwd_iree.specialization.Kernel``),
their entry points with argument roles, and the design rules that fill its
templates in ``mlir/``. ``lnbwd_iree.kernels`` is the registry that lists them."""
