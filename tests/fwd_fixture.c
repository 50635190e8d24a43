/* fwd_fixture.c — see fwd_fixture.h. */
#include "fwd_fixture.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/json.h"
#include "test_util.h"

static int32_t *json_ids(const cJSON *arr, int *n) {
    ck_assert_msg(cJSON_IsArray(arr), "fixture: expected an id array");
    *n = cJSON_GetArraySize(arr);
    int32_t *ids = malloc(sizeof(int32_t) * (*n + 1));
    for (int i = 0; i < *n; i++) ids[i] = (int32_t)cJSON_GetArrayItem(arr, i)->valuedouble;
    return ids;
}

void ks_fwd_fixture_load(const char *file, ks_fwd_fixture *fx) {
    char *buf, path[256];
    size_t size;
    snprintf(path, sizeof path, "forward/%s", file);
    ck_assert_msg(ks_file_read_all(ks_test_fixture(path), &buf, &size) == KS_OK, "%s", ks_last_error());
    uint32_t version, hlen;
    ck_assert_msg(size >= 16 && !memcmp(buf, "KSLOGITS", 8), "%s: not a forward fixture", file);
    memcpy(&version, buf + 8, 4);
    memcpy(&hlen, buf + 12, 4);
    ck_assert_msg(version == 1, "%s: format_version %u, expected 1 (rerun make_forward_fixtures.py)", file, version);
    cJSON *h;
    ck_assert_msg(ks_json_parse(buf + 16, hlen, file, &h) == KS_OK, "%s", ks_last_error());
    memset(fx, 0, sizeof *fx);
    snprintf(fx->name, sizeof fx->name, "%s", cJSON_GetObjectItem(h, "name")->valuestring);
    snprintf(fx->model, sizeof fx->model, "%s", cJSON_GetObjectItem(h, "model")->valuestring);
    const cJSON *prompt = cJSON_GetObjectItem(h, "prompt");
    snprintf(fx->prompt, sizeof fx->prompt, "%s", cJSON_IsString(prompt) ? prompt->valuestring : "");
    fx->chat = cJSON_IsTrue(cJSON_GetObjectItem(h, "chat"));
    fx->ids = json_ids(cJSON_GetObjectItem(h, "ids"), &fx->n_ids);
    fx->greedy = json_ids(cJSON_GetObjectItem(h, "greedy"), &fx->n_greedy);
    fx->vocab = cJSON_GetObjectItem(h, "vocab")->valueint;
    cJSON_Delete(h);
    ck_assert_msg(size == 16 + hlen + sizeof(float) * fx->vocab, "%s: truncated", file);
    fx->logits = malloc(sizeof(float) * fx->vocab);
    memcpy(fx->logits, buf + 16 + hlen, sizeof(float) * fx->vocab);
    free(buf);
}

void ks_fwd_fixture_free(ks_fwd_fixture *fx) {
    free(fx->ids);
    free(fx->greedy);
    free(fx->logits);
    memset(fx, 0, sizeof *fx);
}

int ks_fwd_fixture_list(const char *prefix, char names[][64], int cap) {
    cJSON *idx;
    ck_assert_msg(ks_json_load(ks_test_fixture("forward/index.json"), &idx) == KS_OK, "%s", ks_last_error());
    int n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(idx, "cases")) {
        if (strncmp(c->valuestring, prefix, strlen(prefix)) || n == cap) continue;
        snprintf(names[n++], 64, "%s", c->valuestring);
    }
    cJSON_Delete(idx);
    return n;
}

/* ---- random models -------------------------------------------------------------------------------------- */

static uint64_t g_rng = 0x1234567;

float ks_fwd_unif(float a) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return a * (2.0f * (float)((g_rng >> 40) * (1.0 / 16777216.0)) - 1.0f);
}

/* Fills `n` floats from the arena cursor with center + uniform [-a, a) and returns them. */
static float *take(float **cur, size_t n, float a, float center) {
    float *p = *cur;
    for (size_t i = 0; i < n; i++) p[i] = center + ks_fwd_unif(a);
    *cur += n;
    return p;
}

void ks_fwd_random_model(ks_model *m, const ks_model_config *cfg) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    ck_assert_msg(ks_model_config_validate(&m->cfg, "random test model") == KS_OK, "%s", ks_last_error());
    const size_t D = cfg->hidden, F = cfg->ffn, qd = (size_t)cfg->n_heads * cfg->head_dim;
    const size_t kvd = (size_t)cfg->n_kv_heads * cfg->head_dim, V = cfg->vocab;
    size_t per_layer = 2 * D + D * (qd + 2 * kvd) + (qd + 2 * kvd) + qd * D + D + 3 * D * F;
    m->arena_floats = cfg->n_layers * per_layer + 2 * V * D + D;
    m->arena = malloc(sizeof(float) * m->arena_floats);
    m->layers = calloc(cfg->n_layers, sizeof *m->layers);
    m->source = strdup("random test model");
    m->first_layer = 0, m->last_layer = cfg->n_layers;
    float *cur = m->arena;
    const float ad = sqrtf(3.0f / D), af = sqrtf(3.0f / F), aq = sqrtf(3.0f / qd);
    for (int l = 0; l < cfg->n_layers; l++) {
        ks_layer_weights *w = &m->layers[l];
        w->attn_norm = take(&cur, D, 0.2f, 1.0f);
        w->ffn_norm = take(&cur, D, 0.2f, 1.0f);
        w->wq = take(&cur, qd * D, ad, 0), w->wk = take(&cur, kvd * D, ad, 0), w->wv = take(&cur, kvd * D, ad, 0);
        if (cfg->attn_bias) {
            w->bq = take(&cur, qd, 0.1f, 0), w->bk = take(&cur, kvd, 0.1f, 0), w->bv = take(&cur, kvd, 0.1f, 0);
        }
        w->wo = take(&cur, D * qd, aq, 0);
        if (cfg->o_bias) w->bo = take(&cur, D, 0.1f, 0);
        w->w_gate = take(&cur, F * D, ad, 0), w->w_up = take(&cur, F * D, ad, 0), w->w_down = take(&cur, D * F, af, 0);
    }
    m->embed = take(&cur, V * D, 1.0f, 0);
    m->final_norm = take(&cur, D, 0.2f, 1.0f);
    m->lm_head = cfg->tie_embeddings ? m->embed : take(&cur, V * D, ad, 0);
    ck_assert(cur <= m->arena + m->arena_floats);
}

ks_model_config ks_fwd_config(int hidden, int heads, int kv_heads, int head_dim, int ffn, int vocab, int layers) {
    ks_model_config c;
    memset(&c, 0, sizeof c);
    c.arch = KS_ARCH_LLAMA;
    c.n_layers = layers, c.hidden = hidden, c.n_heads = heads, c.n_kv_heads = kv_heads, c.head_dim = head_dim;
    c.ffn = ffn, c.vocab = vocab, c.max_pos = 4096, c.rms_eps = 1e-5f, c.rope_theta = 10000.0f;
    c.bos_id = -1, c.rope_factor = 1.0f;
    return c;
}
