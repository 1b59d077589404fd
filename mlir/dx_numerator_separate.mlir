  // DX_NUMERATOR for f32 and f64 (layernorm.backward_design): products, then
  // differences, in this order (fmas, or the fused file's order, measured
  // 3-5% slower on the H100's f32 one pass and two passes).
    %g = arith.mulf %gamma_w, %dy_w : {A}
    %t0 = arith.subf %g, %mean_g : {A}
    %t1 = arith.mulf %xhat, %mean_g_xhat : {A}
    %t2 = arith.subf %t0, %t1 : {A}
