/* pipeline_meter.c — see pipeline_meter.h. */
#include "engine/pipeline_meter.h"

#include <string.h>

static void count(ks_pipeline_meter *mt, size_t bytes) {
    mt->hidden_bytes += (int64_t)bytes;
    mt->hidden_messages++;
}

static ks_status meter_send(void *ctx, int to_stage, int channel, const void *buf, size_t bytes) {
    ks_pipeline_meter *mt = ctx;
    if (channel == KS_PIPE_HIDDEN) count(mt, bytes);
    return mt->inner->send(mt->inner->ctx, to_stage, channel, buf, bytes);
}

static ks_status meter_recv(void *ctx, int from_stage, int channel, void *buf, size_t bytes) {
    ks_pipeline_meter *mt = ctx;
    return mt->inner->recv(mt->inner->ctx, from_stage, channel, buf, bytes);
}

static void meter_context(void *ctx, const char *what) {
    ks_pipeline_meter *mt = ctx;
    mt->inner->context(mt->inner->ctx, what);
}

static ks_status meter_send_device(void *device_ctx, int to_stage, const void *rows, size_t bytes, void *stream) {
    ks_pipeline_meter *mt = device_ctx;
    count(mt, bytes);
    return mt->inner->send_device(mt->inner->device_ctx, to_stage, rows, bytes, stream);
}

static ks_status meter_recv_device(void *device_ctx, int from_stage, void *rows, size_t bytes, void *stream) {
    ks_pipeline_meter *mt = device_ctx;
    return mt->inner->recv_device(mt->inner->device_ctx, from_stage, rows, bytes, stream);
}

void ks_pipeline_meter_init(ks_pipeline_meter *mt, const ks_stage_transport *inner) {
    memset(mt, 0, sizeof *mt);
    mt->inner = inner;
    mt->t = (ks_stage_transport){.stage = inner->stage, .n_stages = inner->n_stages, .ctx = mt, .send = meter_send,
                                 .recv = meter_recv, .context = inner->context ? meter_context : NULL};
    if (inner->send_device && inner->recv_device) {
        mt->t.device_ctx = mt;
        mt->t.send_device = meter_send_device;
        mt->t.recv_device = meter_recv_device;
    }
}

void ks_pipeline_meter_reset(ks_pipeline_meter *mt) { mt->hidden_bytes = 0, mt->hidden_messages = 0; }

void ks_pipeline_bubble_of(ks_pipeline_bubble *b, double wall_s, const double *busy_s, int n_stages) {
    KS_ASSERT(n_stages >= 1 && n_stages <= KS_BUBBLE_MAX_STAGES);
    memset(b, 0, sizeof *b);
    b->n_stages = n_stages, b->wall_s = wall_s;
    double sum = 0;
    for (int s = 0; s < n_stages; s++) {
        b->idle_s[s] = wall_s > busy_s[s] ? wall_s - busy_s[s] : 0;
        sum += b->idle_s[s];
    }
    b->mean_idle_fraction = wall_s > 0 ? sum / n_stages / wall_s : 0;
}
