/* test_util.h — helpers shared by the Check tests: paths to the fixtures, the SmolLM2 GGUF and its shared prompt. */
#ifndef KS_TEST_UTIL_H
#define KS_TEST_UTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/generate.h" /* ks_ids, ks_tokenizer, ks_model */

/* "<tests/fixtures>/<rel>" in a static buffer (valid until the next call). */
const char *ks_test_fixture(const char *rel);
/* Path of SmolLM2-135M-Instruct.Q4_1.gguf: $KS_SMOLLM2_GGUF, else the pip package's copy that
 * jobs/smollm2_path.sh found when CMake configured the tests. NULL if absent. */
const char *ks_test_smollm2_gguf(void);
/* SmolLM2 loaded whole with its tokenizer, and ids = the prompt the SmolLM2 method tests share (a secret word and
 * who owns what, no chat template); Check assertions fire when anything fails. The caller frees all three. */
void ks_test_smollm2_prompt(ks_model *model, ks_tokenizer **tok, ks_ids *ids);
/* The same question after a filler of 40 lines (about 650 tokens), more lines where min_tokens asks for more (about
 * 16 tokens a line; fails unless the prompt exceeds min_tokens): a prompt of several 128-token blocks for the
 * sparse-prefill methods. */
void ks_test_smollm2_long_prompt(ks_model *model, ks_tokenizer **tok, ks_ids *ids, int min_tokens);
/* Frees what ks_test_smollm2_prompt or ks_test_smollm2_long_prompt built. */
void ks_test_smollm2_free(ks_model *model, ks_tokenizer *tok, ks_ids *ids);
/* A file `name` holding `text` in ks_test_tmpdir(); returns its path (one of four static buffers, so up to four
 * paths stay valid at once). */
const char *ks_test_write_tmp(const char *name, const char *text);
/* Random inputs: a xorshift64 stream restarted by ks_test_seed (Check runs each test in a fork of main, so a seed
 * set in main starts every test alike); ks_test_urand its next 32 high bits, ks_test_frand uniform in [-1, 1)
 * from their top 24, ks_test_rand_buf n of those times amp (malloc'd). */
void ks_test_seed(uint64_t seed);
uint32_t ks_test_urand(void);
float ks_test_frand(void);
float *ks_test_rand_buf(size_t n, float amp);
/* A fresh temporary directory (mkdtemp under $TMPDIR); static buffer. */
const char *ks_test_tmpdir(void);

/* The prefill chunks of an L-token prompt, 0-terminated in `out` (room for L / chunk + 3 entries): `chunk`
 * tokens each, except that the last chunk holds the method's `window` (the last `window` tokens arrive
 * together, as ks_forward_chunk_len plans them), so it may exceed `chunk`. */
void ks_test_plan_chunks(int *out, int L, int chunk, int window);

/* Runs every test of `s` (in forked children, or in this process when no_fork: one CUDA context, collective
 * MPI tests, child processes of its own), frees the runner and returns the exit status: 0 all passed, 1 not. */
int ks_test_run(Suite *s, int no_fork);

#endif
