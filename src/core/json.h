/* json.h — cJSON with error messages that name the file and the field.
 *
 *     cJSON *root;
 *     KS_TRY(ks_json_load(path, &root));                       // parse errors name the file and offset
 *     int n;
 *     KS_TRY(ks_json_get_int(root, "num_hidden_layers", path, &n)); // "config.json: field 'x' ..."
 *     cJSON_Delete(root);
 *
 * The getters fail with KS_ERR_FORMAT when the field is missing or has the wrong type; the *_opt variants
 * leave *out unchanged when the field is absent or null.
 */
#ifndef KS_JSON_H
#define KS_JSON_H

#include <cjson/cJSON.h>

#include "core/status.h"

ks_status ks_json_load(const char *path, cJSON **out);
ks_status ks_json_parse(const char *text, size_t len, const char *what, cJSON **out);

ks_status ks_json_get_int(const cJSON *obj, const char *key, const char *file, int *out);
ks_status ks_json_get_int_opt(const cJSON *obj, const char *key, const char *file, int *out);
ks_status ks_json_get_float_opt(const cJSON *obj, const char *key, const char *file, float *out);
ks_status ks_json_get_bool_opt(const cJSON *obj, const char *key, const char *file, int *out);
/* *out borrows the string inside obj. */
ks_status ks_json_get_string_opt(const cJSON *obj, const char *key, const char *file, const char **out);

#endif
