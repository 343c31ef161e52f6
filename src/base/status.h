/* status.h: the status codes every fallible function returns, and the error
 * record that carries a human-readable message next to them.
 *
 * Design: a function returns an enum mm_status and, when it fails, fills a
 * caller-owned struct mm_err with a message that names the thing at fault
 * (file, tensor, JSON key). No globals, no errno-style side channels. */
#ifndef MM_BASE_STATUS_H
#define MM_BASE_STATUS_H

#include <stddef.h>

enum mm_status {
    MM_OK = 0,
    MM_ERR_INVALID,     /* bad argument or bad client input */
    MM_ERR_FORMAT,      /* malformed file or data */
    MM_ERR_IO,          /* open/read/write/mmap failed */
    MM_ERR_NOMEM,       /* allocation failed */
    MM_ERR_OVERFLOW,    /* a size computation would overflow */
    MM_ERR_UNSUPPORTED, /* well-formed but not something we implement */
    MM_ERR_NOT_FOUND,   /* a named thing (tensor, key, file) is missing */
    MM_ERR_LIMIT,       /* a configured limit was exceeded */
    MM_ERR_BACKEND,     /* the compute backend failed (e.g. CUDA error) */
    MM_ERR_UNAVAILABLE, /* not accepting work now (draining, stopped) */
};

#define MM_ERR_MSG_MAX 512

/* Caller-owned; only meaningful after a call returned a status != MM_OK. */
struct mm_err {
    enum mm_status status;
    char msg[MM_ERR_MSG_MAX];
};

/* Static string naming the status ("invalid argument", ...). Never NULL. */
const char *mm_status_str(enum mm_status s);

/* Records status and a printf-style message in *err (which may be NULL) and
 * returns status, so failures read `return mm_err_set(err, MM_ERR_FORMAT, ...)`. */
enum mm_status mm_err_set(struct mm_err *err, enum mm_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an existing message (adds context on the way up). */
enum mm_status mm_err_prefix(struct mm_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
