#include "gm-error.h"

#include <stdio.h>
#include <string.h>

int gm_set_errorv(gm_error *err, int code, const char *fmt, va_list ap)
{
    if (err) {
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    }
    return code;
}

int gm_set_error(gm_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gm_set_errorv(err, code, fmt, ap);
    va_end(ap);
    return code;
}

void gm_error_prefix(gm_error *err, const char *fmt, ...)
{
    if (!err)
        return;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* Shift the old message right and put "prefix: " in front, truncating the tail. */
    size_t plen = strlen(prefix);
    if (plen > sizeof err->msg - 3)
        plen = sizeof err->msg - 3;
    size_t olen = strnlen(err->msg, sizeof err->msg - 1);
    size_t room = sizeof err->msg - 1 - (plen + 2);
    if (olen > room)
        olen = room;
    memmove(err->msg + plen + 2, err->msg, olen);
    memcpy(err->msg, prefix, plen);
    err->msg[plen] = ':';
    err->msg[plen + 1] = ' ';
    err->msg[plen + 2 + olen] = '\0';
}

void gm_error_clear(gm_error *err)
{
    if (err) {
        err->code = GM_OK;
        err->msg[0] = '\0';
    }
}
