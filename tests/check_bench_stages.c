/* check_bench_stages.c — what `kvscope bench --gp_num k` counts, without a GPU: the pipeline meter's bytes on
 * the residual-rows channel (a recording transport under it), the bubble's idle times, and the shipped
 * Llama-3.1-70B shape with the stage split eval and bench share (cli/stages.h). */
#include <check.h>
#include <string.h>

#include "cli/stages.h"
#include "engine/pipeline_meter.h"
#include "speed/speed_model.h"
#include "test_util.h"

/* A transport that records the last call it saw. */
typedef struct recorder {
    int sends, recvs, device_sends, device_recvs, contexts;
    int last_channel;
    size_t last_bytes;
} recorder;

static ks_status rec_send(void *ctx, int to, int channel, const void *buf, size_t bytes) {
    recorder *r = ctx;
    (void)to, (void)buf;
    r->sends++, r->last_channel = channel, r->last_bytes = bytes;
    return KS_OK;
}

static ks_status rec_recv(void *ctx, int from, int channel, void *buf, size_t bytes) {
    recorder *r = ctx;
    (void)from, (void)buf;
    r->recvs++, r->last_channel = channel, r->last_bytes = bytes;
    return KS_OK;
}

static void rec_context(void *ctx, const char *what) {
    (void)what;
    ((recorder *)ctx)->contexts++;
}

static ks_status rec_send_device(void *ctx, int to, const void *rows, size_t bytes, void *stream) {
    recorder *r = ctx;
    (void)to, (void)rows, (void)stream;
    r->device_sends++, r->last_bytes = bytes;
    return KS_OK;
}

static ks_status rec_recv_device(void *ctx, int from, void *rows, size_t bytes, void *stream) {
    recorder *r = ctx;
    (void)from, (void)rows, (void)stream;
    r->device_recvs++, r->last_bytes = bytes;
    return KS_OK;
}

START_TEST(test_meter_host) {
    recorder r = {0};
    ks_stage_transport inner = {.stage = 1, .n_stages = 3, .ctx = &r, .send = rec_send, .recv = rec_recv,
                                .context = rec_context};
    ks_pipeline_meter mt;
    ks_pipeline_meter_init(&mt, &inner);
    ck_assert(mt.t.stage == 1 && mt.t.n_stages == 3);
    ck_assert_ptr_null(mt.t.send_device); /* the pipeline then sends the rows through host memory */
    float rows[8] = {0};
    ck_assert_int_eq(mt.t.send(mt.t.ctx, 2, KS_PIPE_HIDDEN, rows, sizeof rows), KS_OK);
    ck_assert_int_eq(mt.t.send(mt.t.ctx, 2, KS_PIPE_CONTROL, rows, 8), KS_OK);   /* a header: not counted */
    ck_assert_int_eq(mt.t.send(mt.t.ctx, 0, KS_PIPE_TOKEN, rows, 4), KS_OK);     /* the token: not counted */
    ck_assert_int_eq(mt.t.recv(mt.t.ctx, 0, KS_PIPE_HIDDEN, rows, sizeof rows), KS_OK); /* received: not sent */
    mt.t.context(mt.t.ctx, "a prompt");
    ck_assert_int_eq(r.sends, 3);
    ck_assert_int_eq(r.recvs, 1);
    ck_assert_int_eq(r.contexts, 1);
    ck_assert_int_eq(r.last_channel, KS_PIPE_HIDDEN);
    ck_assert_int_eq(mt.hidden_bytes, (int64_t)sizeof rows);
    ck_assert_int_eq(mt.hidden_messages, 1);
    ks_pipeline_meter_reset(&mt);
    ck_assert_int_eq(mt.hidden_bytes, 0);
    ck_assert_int_eq(mt.hidden_messages, 0);
}
END_TEST

START_TEST(test_meter_device) {
    recorder r = {0}, dev = {0};
    ks_stage_transport inner = {.stage = 0, .n_stages = 2, .ctx = &r, .send = rec_send, .recv = rec_recv,
                                .device_ctx = &dev, .send_device = rec_send_device,
                                .recv_device = rec_recv_device};
    ks_pipeline_meter mt;
    ks_pipeline_meter_init(&mt, &inner);
    ck_assert_ptr_nonnull(mt.t.send_device);
    ck_assert_ptr_nonnull(mt.t.recv_device);
    ck_assert_ptr_null(mt.t.context); /* none below it */
    ck_assert_int_eq(mt.t.send_device(mt.t.device_ctx, 1, NULL, 4096 * 4, NULL), KS_OK);
    ck_assert_int_eq(mt.t.send_device(mt.t.device_ctx, 1, NULL, 8448 * 4096 * 4, NULL), KS_OK);
    ck_assert_int_eq(mt.t.recv_device(mt.t.device_ctx, 1, NULL, 4096 * 4, NULL), KS_OK);
    ck_assert_int_eq(dev.device_sends, 2);
    ck_assert_int_eq(dev.device_recvs, 1);
    ck_assert_int_eq(r.sends + r.recvs, 0);
    ck_assert_int_eq(mt.hidden_bytes, (int64_t)4096 * 4 + (int64_t)8448 * 4096 * 4);
    ck_assert_int_eq(mt.hidden_messages, 2);
}
END_TEST

START_TEST(test_bubble) {
    ks_pipeline_bubble b;
    const double busy[3] = {8.0, 10.0, 12.0};
    ks_pipeline_bubble_of(&b, 10.0, busy, 3);
    ck_assert_int_eq(b.n_stages, 3);
    ck_assert(b.idle_s[0] == 2.0 && b.idle_s[1] == 0.0 && b.idle_s[2] == 0.0); /* busy over the wall: noise, 0 */
    ck_assert_double_eq_tol(b.mean_idle_fraction, 2.0 / 3.0 / 10.0, 1e-12);
    const double two[2] = {3.0, 1.0};
    ks_pipeline_bubble_of(&b, 4.0, two, 2);
    ck_assert(b.idle_s[0] == 1.0 && b.idle_s[1] == 3.0);
    ck_assert_double_eq_tol(b.mean_idle_fraction, 0.5, 1e-12);
    ks_pipeline_bubble_of(&b, 0.0, two, 2);
    ck_assert(b.mean_idle_fraction == 0.0);
}
END_TEST

/* The shipped 70B shape loads with its published numbers, and two stages split its 80 layers in halves (the
 * embedding on stage 0 weighs as much as the LM head on stage 1). */
START_TEST(test_70b_shape) {
    ks_model m = {0};
    ck_assert_int_eq(ks_speed_model_init(&m, KS_DATA "/../configs/models/llama-3.1-70b.json"), KS_OK);
    const ks_model_config *c = &m.cfg;
    ck_assert(c->hidden == 8192 && c->n_layers == 80 && c->n_heads == 64 && c->n_kv_heads == 8);
    ck_assert(c->head_dim == 128 && c->ffn == 28672 && c->vocab == 128256 && !c->tie_embeddings);
    ck_assert(c->rope_type == KS_ROPE_LLAMA3 && c->rope_factor == 8.0f && c->rope_orig_max_pos == 8192);
    ck_assert(c->rope_theta == 500000.0f && c->max_pos == 131072);
    const int want[2][2] = {{0, 40}, {40, 80}};
    for (int rank = 0; rank < 2; rank++) {
        ks_mpi mpi = {.rank = rank, .size = 2};
        ks_stages s = {0};
        ck_assert_int_eq(ks_stages_layout(&s, "2", &mpi, c, m.source), KS_OK);
        ck_assert_int_eq(s.first_layer, want[rank][0]);
        ck_assert_int_eq(s.last_layer, want[rank][1]);
        ck_assert(s.bounds[0] == 0 && s.bounds[1] == 40 && s.bounds[2] == 80);
    }
    ks_mpi three = {.rank = 0, .size = 3};
    ks_stages s = {0};
    ck_assert_int_eq(ks_stages_layout(&s, "2", &three, c, m.source), KS_ERR_ARG); /* 3 ranks, 2 stages */
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "--gp_num 2"));
    ks_model_free(&m);
}
END_TEST

int main(void) {
    Suite *s = suite_create("bench_stages");
    TCase *tc = tcase_create("bench_stages");
    tcase_add_test(tc, test_meter_host);
    tcase_add_test(tc, test_meter_device);
    tcase_add_test(tc, test_bubble);
    tcase_add_test(tc, test_70b_shape);
    suite_add_tcase(s, tc);
    return ks_test_run(s, 0);
}
