/*
 * error.c - names, statuses and messages for drover's error codes.
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct err_info {
    const char *name;
    int status;
};

static const struct err_info err_table[DRV__ERROR_COUNT] = {[DRV_OK] = {"ok", 200},
#define X(sym, name, status) [DRV_E##sym] = {name, status},
                                                            DRV_ERROR_TABLE(X)
#undef X
};

static const struct err_info *err_lookup(int rc)
{
    long code = rc < 0 ? -(long)rc : rc; /* long: -INT_MIN does not fit an int */
    if (code >= DRV__ERROR_COUNT)
        return &err_table[DRV_EINTERNAL];
    return &err_table[code];
}

const char *err_name(int rc)
{
    return err_lookup(rc)->name;
}

int err_http_status(int rc)
{
    return err_lookup(rc)->status;
}

int errmsg_set(struct errmsg *e, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->text, sizeof(e->text), fmt, ap);
    va_end(ap);
    e->field[0] = '\0';
    return rc;
}

int errmsg_field(struct errmsg *e, int rc, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->text, sizeof(e->text), fmt, ap);
    va_end(ap);
    snprintf(e->field, sizeof(e->field), "%s", field);
    return rc;
}
