/* fwd_fixture.h — the forward-pass fixtures of tests/fixtures/forward/ (written by
 * tests/tools/make_forward_fixtures.py from the independent numpy reference): per case the prompt ids, the
 * last-position logits and the greedy continuation. File format: "KSLOGITS", uint32 format_version (1),
 * uint32 header length, a JSON header, then float32 logits (vocab). Check assertions fire on bad files.
 *
 *     char names[8][64];
 *     int n = ks_fwd_fixture_list("synth_", names, 8);      // from forward/index.json
 *     ks_fwd_fixture fx;
 *     ks_fwd_fixture_load(names[0], &fx);  ...  ks_fwd_fixture_free(&fx);
 */
#ifndef KS_FWD_FIXTURE_H
#define KS_FWD_FIXTURE_H

#include <stdint.h>

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

#endif
