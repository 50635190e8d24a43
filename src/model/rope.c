/* rope.c — RoPE inverse frequencies, transcribed from transformers' modeling_rope_utils:
 *   default: inv_freq[i] = 1 / theta^(2i/d)                       (_compute_default_rope_parameters)
 *   linear:  inv_freq / factor                                     (_compute_linear_scaling_rope_parameters)
 *   llama3:  wavelengths longer than orig_ctx/low_freq_factor are divided by factor, shorter than
 *            orig_ctx/high_freq_factor kept, and those in between blended with
 *            smooth = (orig_ctx/wavelen - low) / (high - low)      (_compute_llama3_parameters)
 * in fp32 as torch computes them; then llama.cpp's per-dimension freq_factors (GGUF rope_freqs) divide. */
#include <math.h>

#include "model/config.h"

static float llama3_scale(const ks_model_config *c, float inv) {
    const float factor = c->rope_factor, low = c->rope_low_freq_factor, high = c->rope_high_freq_factor;
    const float old_ctx = (float)c->rope_orig_max_pos;
    const float low_freq_wavelen = old_ctx / low, high_freq_wavelen = old_ctx / high;
    const float wavelen = (float)(2.0 * M_PI) / inv;
    if (wavelen < high_freq_wavelen) return inv;
    if (wavelen > low_freq_wavelen) return inv / factor;
    const float smooth = (old_ctx / wavelen - low) / (high - low);
    return (1.0f - smooth) * inv / factor + smooth * inv;
}

void ks_rope_inv_freq(const ks_model_config *c, float *inv_freq) {
    const int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        float inv = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->head_dim);
        if (c->rope_type == KS_ROPE_LINEAR) inv /= c->rope_factor;
        else if (c->rope_type == KS_ROPE_LLAMA3) inv = llama3_scale(c, inv);
        if (c->n_rope_freq_factors) inv /= c->rope_freq_factors[i];
        inv_freq[i] = inv;
    }
}
