/* Error reporting for every C entry point: a status code plus a message in a
 * caller-provided buffer. Nothing in the engine prints, aborts or exits. */
#ifndef RS_ERRORS_H
#define RS_ERRORS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* Writes the formatted message into err (if any) and returns code. */
static inline int rs_fail(char *err, size_t err_len, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline int rs_fail(char *err, size_t err_len, int code, const char *fmt, ...) {
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return code;
}

#endif
