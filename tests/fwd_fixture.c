/* fwd_fixture.c — see fwd_fixture.h. */
#include "fwd_fixture.h"

#include <check.h>
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
