/* log.c — see log.h. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>

#include "core/status.h"

static int ks_log_rank = -1;
static int ks_log_quiet = 0;

void ks_log_set_rank(int rank) { ks_log_rank = rank; }
void ks_log_set_quiet(int quiet) { ks_log_quiet = quiet; }

static void emit(const char *level, const char *fmt, va_list ap) {
    if (ks_log_rank >= 0) fprintf(stderr, "[kvscope r%d]%s ", ks_log_rank, level);
    else fprintf(stderr, "[kvscope]%s ", level);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void ks_log_info(const char *fmt, ...) {
    if (ks_log_quiet) return;
    va_list ap;
    va_start(ap, fmt);
    emit("", fmt, ap);
    va_end(ap);
}

void ks_log_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    emit(" warning:", fmt, ap);
    va_end(ap);
}

void ks_log_error_now(void) {
    if (ks_log_rank >= 0) fprintf(stderr, "kvscope r%d: error: %s\n", ks_log_rank, ks_last_error());
    else fprintf(stderr, "kvscope: error: %s\n", ks_last_error());
    fflush(stderr);
    ks_error_mark_reported();
}
