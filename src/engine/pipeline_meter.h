/* pipeline_meter.h — what a pipeline stage sends and how long the stages sit idle (`kvscope bench --gp_num k`).
 *
 *     ks_pipeline_meter mt;
 *     ks_pipeline_meter_init(&mt, &transport);      // wraps a stage's transport (engine/pipeline.h); borrows it
 *     KS_TRY(ks_pipeline_init(&p, &fwd, &mt.t));    // the pipeline sends through the meter
 *     ... prefill, decode ...
 *     mt.hidden_bytes, mt.hidden_messages           // this stage's residual rows sent since the last reset
 *     ks_pipeline_meter_reset(&mt);
 *
 *     ks_pipeline_bubble b;
 *     ks_pipeline_bubble_of(&b, wall_s, busy_s, n_stages);  // idle = wall - busy per stage, the mean fraction
 *
 * The meter counts the bytes a stage hands to the next on the residual-rows channel (KS_PIPE_HIDDEN), through
 * host memory (send) or between GPUs (send_device) alike; the headers, tokens and statistics are not counted.
 * Every call goes on to the wrapped transport unchanged, so a pipeline over the meter runs as over the
 * transport itself, with device entries exactly where the transport has them. */
#ifndef KS_PIPELINE_METER_H
#define KS_PIPELINE_METER_H

#include <stdint.h>

#include "engine/pipeline.h"

typedef struct ks_pipeline_meter {
    ks_stage_transport t;             /* the table to hand to the pipeline; its contexts point at this meter */
    const ks_stage_transport *inner;  /* the transport measured; borrowed */
    int64_t hidden_bytes;             /* KS_PIPE_HIDDEN bytes sent since init or the last reset */
    int64_t hidden_messages;          /* the sends that carried them */
} ks_pipeline_meter;

/* mt->t = inner's table with its sends counted. The meter must stay where it is while the pipeline uses it. */
void ks_pipeline_meter_init(ks_pipeline_meter *mt, const ks_stage_transport *inner);
void ks_pipeline_meter_reset(ks_pipeline_meter *mt);

#define KS_BUBBLE_MAX_STAGES 64

/* A pipelined run's wall time against each stage's busy time (its layers alone on the same work). */
typedef struct ks_pipeline_bubble {
    int n_stages;
    double wall_s;
    double idle_s[KS_BUBBLE_MAX_STAGES]; /* wall - busy, 0 where busy exceeds the wall (timing noise) */
    double mean_idle_fraction;           /* mean over the stages of idle_s / wall_s; 0 when wall_s is 0 */
} ks_pipeline_bubble;

/* b from the wall time and busy_s[0 .. n_stages) (1 <= n_stages <= KS_BUBBLE_MAX_STAGES). */
void ks_pipeline_bubble_of(ks_pipeline_bubble *b, double wall_s, const double *busy_s, int n_stages);

#endif
