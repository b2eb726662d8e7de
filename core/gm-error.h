/* gm-error.h — error reporting for the inference layers.
 *
 * The inference layers never abort on bad input: every fallible function takes a
 * gm_error* (which may be NULL) and returns a negative code, with a message that
 * names the file, tensor, key, byte offset or input that is wrong.
 */
#pragma once

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    GM_OK = 0,
    GM_ERR_IO = -1,        /* open/read/mmap failed */
    GM_ERR_FORMAT = -2,    /* malformed file or input */
    GM_ERR_UNSUPPORTED = -3, /* valid but not handled (unknown type, architecture) */
    GM_ERR_NOMEM = -4,
    GM_ERR_INVALID = -5,   /* bad argument from the caller */
    GM_ERR_RANGE = -6,     /* context exceeded, too large */
    GM_ERR_CANCELLED = -7,
    GM_ERR_LIMIT = -8,     /* over a limit the caller set (pixels, duration): the caller's
                              policy, not a broken input */
};

typedef struct gm_error {
    int code;
    char msg[512];
} gm_error;

/* Sets err (if non-NULL) and returns code, so callers can `return gm_set_error(...)`. */
int gm_set_error(gm_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int gm_set_errorv(gm_error *err, int code, const char *fmt, va_list ap);

/* Prefixes the existing message with context ("loading foo.gguf: ..."). */
void gm_error_prefix(gm_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void gm_error_clear(gm_error *err);

#ifdef __cplusplus
}
#endif
