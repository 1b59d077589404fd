  // GC_TERM for f32 and f64 (layernorm.backward_design): product, then difference.
    %g = arith.mulf %gamma_w, %dy_w : {A}
    %g_c = arith.subf %g, %mean_g : {A}
