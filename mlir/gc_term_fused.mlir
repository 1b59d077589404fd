  // GC_TERM for 16-bit data (layernorm.backward_design): one fma, so that
  // gamma * dY is not kept on its own (GPU registers with several rows a step).
    %neg_mean_g = arith.negf %mean_g : {A}
    %g_c = math.fma %gamma_w, %dy_w, %neg_mean_g : {A}
