/* json.h: typed getters over cJSON that produce error messages naming the
 * key, and a whole-file reader. Used by the model layer for config.json and
 * the tokenizer files, and (later) by the HTTP layer.
 *
 * Every getter: `ctx` names the object for messages (e.g. "config.json:
 * llm_config"). If the key is absent and `required` is false, *out keeps its
 * value (the caller's default) and MM_OK is returned. */
#ifndef MM_BASE_JSON_H
#define MM_BASE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "base/status.h"

enum mm_status mm_json_get_i64(const cJSON *obj, const char *key, bool required, int64_t *out,
                               const char *ctx, struct mm_err *err);
enum mm_status mm_json_get_f64(const cJSON *obj, const char *key, bool required, double *out,
                               const char *ctx, struct mm_err *err);
enum mm_status mm_json_get_bool(const cJSON *obj, const char *key, bool required, bool *out,
                                const char *ctx, struct mm_err *err);
/* *out borrows the string inside obj (valid while obj lives). */
enum mm_status mm_json_get_str(const cJSON *obj, const char *key, bool required, const char **out,
                               const char *ctx, struct mm_err *err);
/* Object-valued key; *out borrows. */
enum mm_status mm_json_get_obj(const cJSON *obj, const char *key, bool required, const cJSON **out,
                               const char *ctx, struct mm_err *err);

/* A JSON string item holding exactly the n bytes of s, NUL bytes included
 * (written as \u0000): cJSON's own strings end at the first NUL, which would
 * cut generated text short. The bytes should be UTF-8. Caller owns the item
 * (or hands it to an object/array); NULL when out of memory. */
cJSON *mm_json_string_n(const char *s, size_t n);

/* Reads a whole file into a NUL-terminated heap buffer (caller frees).
 * Refuses files larger than max_bytes with MM_ERR_LIMIT. */
enum mm_status mm_file_read_all(const char *path, size_t max_bytes, char **out, size_t *len,
                                struct mm_err *err);
/* Reads and parses a JSON file; caller frees *out with cJSON_Delete. */
enum mm_status mm_json_read_file(const char *path, size_t max_bytes, cJSON **out,
                                 struct mm_err *err);

#endif
