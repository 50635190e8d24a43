/* fwd_fixture.h — the forward-pass fixtures of tests/fixtures/forward/ (written by
 * tests/tools/make_forward_fixtures.py from the independent numpy reference): per case the prompt ids, the
 * last-position logits and the greedy continuation. File format: "KSLOGITS", uint32 format_version (1),
 * uint32 header length, a JSON header, then float32 logits (vocab). Check assertions fire on bad files.
 *
 *     char names[8][64];
 *     int n = ks_fwd_fixture_list("synth_", names, 8);      // from forward/index.json
 *     ks_fwd_fixture fx;
 *     ks_fwd_fixture_load(names[0], &fx);  ...  ks_fwd_fixture_free(&fx);
 *
 * Random in-memory models (for shapes no checkpoint has, e.g. the GPU's tensor-core head dims):
 *
 *     ks_model_config c = ks_fwd_config(256, 4, 2, 64, 512, 1000, 2);   // hidden, H, Hk, d, ffn, vocab, layers
 *     c.attn_bias = 1;                                                   // any other field
 *     ks_model m;
 *     ks_fwd_random_model(&m, &c);  ...  ks_model_free(&m);
 */
#ifndef KS_FWD_FIXTURE_H
#define KS_FWD_FIXTURE_H

#include <stdint.h>

#include "model/model.h"

typedef struct ks_fwd_fixture {
    char name[64];
    char model[256];   /* path relative to tests/fixtures, or "smollm2" */
    char prompt[1024]; /* the prompt text ("" for random ids) */
    int chat;          /* the prompt was wrapped in the chat template */
    int32_t *ids, *greedy; /* (n_ids) prompt ids, (n_greedy) the reference's greedy continuation; owned */
    int n_ids, n_greedy;
    float *logits;     /* (vocab) at the last prompt position; owned */
    int vocab;
} ks_fwd_fixture;

/* Loads tests/fixtures/forward/<file>. */
void ks_fwd_fixture_load(const char *file, ks_fwd_fixture *fx);
void ks_fwd_fixture_free(ks_fwd_fixture *fx);
/* The case files whose name starts with `prefix`, from forward/index.json, into names; returns the count. */
int ks_fwd_fixture_list(const char *prefix, char names[][64], int cap);

/* A Llama config of that shape (rms_eps 1e-5, RoPE theta 1e4, no biases, untied head). */
ks_model_config ks_fwd_config(int hidden, int heads, int kv_heads, int head_dim, int ffn, int vocab, int layers);
/* A model with cfg's shape and random weights (projections with unit-variance outputs), as ks_model_load would
 * hold it; ks_model_free releases it. The weights come from one xorshift stream per test program. */
void ks_fwd_random_model(ks_model *m, const ks_model_config *cfg);
/* The stream's next value, uniform on [-a, a). */
float ks_fwd_unif(float a);

#endif
