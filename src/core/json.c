/* json.c — see json.h. */
#include "core/json.h"

#include <math.h>
#include <stdlib.h>

#include "core/file.h"

ks_status ks_json_parse(const char *text, size_t len, const char *what, cJSON **out) {
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!*out) {
        size_t off = end ? (size_t)(end - text) : 0;
        return ks_fail(KS_ERR_FORMAT, "%s: invalid JSON near byte %zu", what, off);
    }
    return KS_OK;
}

ks_status ks_json_load(const char *path, cJSON **out) {
    char *text;
    size_t n;
    *out = NULL;
    KS_TRY(ks_file_read_all(path, &text, &n));
    ks_status st = ks_json_parse(text, n, path, out);
    free(text);
    return st;
}

static ks_status number_field(const cJSON *obj, const char *key, const char *file, int required,
                              const cJSON **item) {
    *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!*item || cJSON_IsNull(*item)) {
        *item = NULL;
        if (required) return ks_fail(KS_ERR_FORMAT, "%s: required field '%s' is missing", file, key);
        return KS_OK;
    }
    if (!cJSON_IsNumber(*item))
        return ks_fail(KS_ERR_FORMAT, "%s: field '%s' must be a number", file, key);
    return KS_OK;
}

static ks_status get_int(const cJSON *obj, const char *key, const char *file, int required, int *out) {
    const cJSON *it;
    KS_TRY(number_field(obj, key, file, required, &it));
    if (!it) return KS_OK;
    double v = it->valuedouble;
    if (v != floor(v) || v < -2147483648.0 || v > 2147483647.0)
        return ks_fail(KS_ERR_FORMAT, "%s: field '%s' must be an integer (got %g)", file, key, v);
    *out = (int)v;
    return KS_OK;
}

ks_status ks_json_get_int(const cJSON *obj, const char *key, const char *file, int *out) {
    return get_int(obj, key, file, 1, out);
}

ks_status ks_json_get_int_opt(const cJSON *obj, const char *key, const char *file, int *out) {
    return get_int(obj, key, file, 0, out);
}

ks_status ks_json_get_float_opt(const cJSON *obj, const char *key, const char *file, float *out) {
    const cJSON *it;
    KS_TRY(number_field(obj, key, file, 0, &it));
    if (it) *out = (float)it->valuedouble;
    return KS_OK;
}

ks_status ks_json_get_bool_opt(const cJSON *obj, const char *key, const char *file, int *out) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it || cJSON_IsNull(it)) return KS_OK;
    if (!cJSON_IsBool(it)) return ks_fail(KS_ERR_FORMAT, "%s: field '%s' must be true or false", file, key);
    *out = cJSON_IsTrue(it);
    return KS_OK;
}

ks_status ks_json_get_string_opt(const cJSON *obj, const char *key, const char *file, const char **out) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it || cJSON_IsNull(it)) return KS_OK;
    if (!cJSON_IsString(it)) return ks_fail(KS_ERR_FORMAT, "%s: field '%s' must be a string", file, key);
    *out = it->valuestring;
    return KS_OK;
}
