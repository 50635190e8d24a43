/* check_stage.c — --gp_num parsing, the ranks' instance/stage layout and the layer split by weight bytes, on
 * cases worked out by hand. */
#include <check.h>
#include <string.h>

#include "stage.h"
#include "test_util.h"

START_TEST(test_gp_num_parse) {
    ks_gp_num g;
    ck_assert_int_eq(ks_gp_num_parse("1", &g), KS_OK);
    ck_assert(g.stages == 1 && g.per_gpu == 1);
    ck_assert_int_eq(ks_gp_num_parse("4", &g), KS_OK);
    ck_assert(g.stages == 4 && g.per_gpu == 1);
    ck_assert_int_eq(ks_gp_num_parse("1/2", &g), KS_OK);
    ck_assert(g.stages == 1 && g.per_gpu == 2);
    const char *bad[] = {"", "0", "-1", "2/3", "1/0", "1/", "/2", "abc", "2x", "65", "1/2/3", "99999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_msg(ks_gp_num_parse(bad[i], &g) == KS_ERR_ARG, "accepted --gp_num '%s'", bad[i]);
        ck_assert_ptr_nonnull(strstr(ks_last_error(), "--gp_num"));
    }
}
END_TEST

START_TEST(test_layout) {
    ks_gp_num g = {.stages = 2, .per_gpu = 1};
    ks_stage_layout s;
    ck_assert_int_eq(ks_stage_layout_init(&s, &g, 4, 3, 30), KS_OK); /* ranks {0,1} {2,3} */
    ck_assert(s.n_instances == 2 && s.instance == 1 && s.n_stages == 2 && s.stage == 1 && s.first_rank == 2);
    ck_assert_int_eq(ks_stage_layout_init(&s, &g, 4, 0, 30), KS_OK);
    ck_assert(s.instance == 0 && s.stage == 0 && s.first_rank == 0);
    ck_assert_int_eq(ks_stage_layout_init(&s, &g, 3, 0, 30), KS_ERR_ARG); /* 3 ranks, instances of 2 */
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "multiple of 2"));
    g.stages = 3;
    ck_assert_int_eq(ks_stage_layout_init(&s, &g, 3, 2, 2), KS_ERR_ARG); /* 3 stages, 2 layers */
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "2 layers"));
    g = (ks_gp_num){.stages = 1, .per_gpu = 2};
    ck_assert_int_eq(ks_stage_layout_init(&s, &g, 3, 2, 2), KS_OK);
    ck_assert(s.n_instances == 3 && s.instance == 2 && s.stage == 0 && s.first_rank == 2);
}
END_TEST

static void expect_split(const int64_t *bytes, int n, int64_t embed, int64_t head, int k, const int *want) {
    int first[KS_STAGE_MAX + 1];
    ck_assert_int_eq(ks_stage_split(bytes, n, embed, head, k, first), KS_OK);
    for (int s = 0; s <= k; s++) ck_assert_msg(first[s] == want[s], "stage %d starts at %d, not %d", s, first[s], want[s]);
}

START_TEST(test_split) {
    int64_t ones[30];
    for (int i = 0; i < 30; i++) ones[i] = 1;
    expect_split(ones, 30, 0, 0, 1, (int[]){0, 30});
    expect_split(ones, 30, 0, 0, 3, (int[]){0, 10, 20, 30});
    expect_split(ones, 3, 0, 0, 3, (int[]){0, 1, 2, 3});
    /* Embedding and head of 5 layers each: no split reaches 13 per stage (8 + 13 + 8 < 30), so 14 is best; the
     * last boundary as early as 14 allows (21: 9 layers + head), then the first balanced (8 + 5 = 13 = 21 - 8). */
    expect_split(ones, 30, 5, 5, 3, (int[]){0, 8, 21, 30});
    /* Two stages, the head alone outweighs 4 layers: 10 layers, head 4 -> 7 | 3 + 4. */
    expect_split(ones, 10, 0, 4, 2, (int[]){0, 7, 10});
    /* A heavy layer in the middle stands alone. */
    const int64_t spike[] = {1, 1, 10, 1, 1};
    expect_split(spike, 5, 0, 0, 3, (int[]){0, 2, 3, 5});
    int first[4];
    ck_assert_int_eq(ks_stage_split(ones, 2, 0, 0, 3, first), KS_ERR_ARG);
}
END_TEST

START_TEST(test_gpu_choice) {
    int gpu;
    ck_assert_int_eq(ks_stage_gpu(NULL, 0, 4, 3, 4, 1, &gpu), KS_OK);
    ck_assert_int_eq(gpu, 3);
    const int list[] = {0, 1, 3};
    ck_assert_int_eq(ks_stage_gpu(list, 3, 4, 2, 3, 1, &gpu), KS_OK);
    ck_assert_int_eq(gpu, 3);
    ck_assert_int_eq(ks_stage_gpu(list, 3, 4, 5, 6, 2, &gpu), KS_OK); /* 1/2: ranks 4, 5 on the third listed */
    ck_assert_int_eq(gpu, 3);
    ck_assert_int_eq(ks_stage_gpu(list, 3, 4, 0, 4, 1, &gpu), KS_ERR_ARG); /* 4 ranks, 3 GPUs listed */
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "start at most 3 ranks per node"));
    ck_assert_int_eq(ks_stage_gpu(NULL, 0, 1, 0, 3, 2, &gpu), KS_ERR_ARG); /* 3 ranks, one GPU, 2 per GPU */
    ck_assert_int_eq(ks_stage_gpu(NULL, 0, 0, 0, 1, 1, &gpu), KS_ERR_DEVICE); /* no GPU at all */
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "--device cpu"));
    const int missing[] = {0, 4};
    ck_assert_int_eq(ks_stage_gpu(missing, 2, 4, 0, 1, 1, &gpu), KS_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "--device 4"));
}
END_TEST

int main(void) {
    Suite *s = suite_create("stage");
    TCase *tc = tcase_create("stage");
    tcase_add_test(tc, test_gp_num_parse);
    tcase_add_test(tc, test_layout);
    tcase_add_test(tc, test_split);
    tcase_add_test(tc, test_gpu_choice);
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
