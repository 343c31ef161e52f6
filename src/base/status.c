/* status.c: status names and the error record helpers of status.h. */
#include "base/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *mm_status_str(enum mm_status s)
{
    switch (s) {
    case MM_OK:
        return "ok";
    case MM_ERR_INVALID:
        return "invalid argument";
    case MM_ERR_FORMAT:
        return "malformed data";
    case MM_ERR_IO:
        return "I/O error";
    case MM_ERR_NOMEM:
        return "out of memory";
    case MM_ERR_OVERFLOW:
        return "size overflow";
    case MM_ERR_UNSUPPORTED:
        return "unsupported";
    case MM_ERR_NOT_FOUND:
        return "not found";
    case MM_ERR_LIMIT:
        return "limit exceeded";
    case MM_ERR_BACKEND:
        return "backend error";
    case MM_ERR_UNAVAILABLE:
        return "unavailable";
    }
    return "unknown status";
}

enum mm_status mm_err_set(struct mm_err *err, enum mm_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

enum mm_status mm_err_prefix(struct mm_err *err, const char *fmt, ...)
{
    if (!err)
        return MM_ERR_INVALID;
    char prefix[MM_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* compose in a buffer large enough for both, then truncate into msg */
    char both[2 * MM_ERR_MSG_MAX + 2];
    snprintf(both, sizeof both, "%s: %s", prefix, err->msg);
    memcpy(err->msg, both, MM_ERR_MSG_MAX - 1);
    err->msg[MM_ERR_MSG_MAX - 1] = '\0';
    return err->status;
}
