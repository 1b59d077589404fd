  // DX_NUMERATOR for 16-bit data (layernorm.backward_design): two fmas,
  // gamma * dY last, which keeps several rows a step within 127 registers
  // (sm_90; this order with the separate file's products: 128 and spills).
    %neg_mean_g = arith.negf %mean_g : {A}
    %neg_mean_g_xhat = arith.negf %mean_g_xhat : {A}
    %shift = math.fma %xhat, %neg_mean_g_xhat, %neg_mean_g : {A}
    %t2 = math.fma %gamma_w, %dy_w, %shift : {A}
