/* tool-common.c — shared helpers of the command-line tools (see tool-common.h). */
#include "tool-common.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void tool_args_init(tool_args *a, int argc, char **argv, const char *prog)
{
    a->argc = argc;
    a->argv = argv;
    a->i = 1;
    a->prog = prog;
    a->error = false;
}

bool tool_flag(tool_args *a, const char *name, const char *alt)
{
    const char *s = a->argv[a->i];
    return strcmp(s, name) == 0 || (alt && strcmp(s, alt) == 0);
}

/* Matches "name", "alt", "name=VALUE" or "alt=VALUE"; sets *inline_value for the latter. */
static bool match_opt(const char *s, const char *name, const char **inline_value)
{
    size_t n = strlen(name);
    if (strncmp(s, name, n) != 0)
        return false;
    if (s[n] == '\0') {
        *inline_value = NULL;
        return true;
    }
    if (s[n] == '=' && name[0] == '-' && name[1] == '-') {
        *inline_value = s + n + 1;
        return true;
    }
    return false;
}

bool tool_opt_str(tool_args *a, const char *name, const char *alt, const char **out)
{
    const char *s = a->argv[a->i], *v = NULL;
    const char *which = name;
    if (!match_opt(s, name, &v)) {
        if (!alt || !match_opt(s, alt, &v))
            return false;
        which = alt;
    }
    if (!v) {
        if (a->i + 1 >= a->argc) {
            fprintf(stderr, "%s: option %s needs a value\n", a->prog, which);
            a->error = true;
            return true;
        }
        v = a->argv[++a->i];
    }
    *out = v;
    return true;
}

bool tool_opt_long(tool_args *a, const char *name, const char *alt, long min, long max, long *out)
{
    const char *v = NULL;
    if (!tool_opt_str(a, name, alt, &v))
        return false;
    if (a->error)
        return true;
    if (tool_parse_long(v, min, max, out) != 0) {
        fprintf(stderr, "%s: option %s: \"%s\" is not an integer in [%ld, %ld]\n", a->prog, name, v, min, max);
        a->error = true;
    }
    return true;
}

bool tool_opt_double(tool_args *a, const char *name, const char *alt, double min, double max, double *out)
{
    const char *v = NULL;
    if (!tool_opt_str(a, name, alt, &v))
        return false;
    if (a->error)
        return true;
    if (tool_parse_double(v, min, max, out) != 0) {
        fprintf(stderr, "%s: option %s: \"%s\" is not a number in [%g, %g]\n", a->prog, name, v, min, max);
        a->error = true;
    }
    return true;
}

int tool_parse_long(const char *s, long min, long max, long *out)
{
    if (!s || !*s)
        return -1;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int tool_parse_double(const char *s, double min, double max, double *out)
{
    if (!s || !*s)
        return -1;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v) || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int tool_parse_ids(const char *s, int32_t n_vocab, gm_tokens *out, char *msg, size_t cap)
{
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',')
            p++;
        if (!*p)
            break;
        char *end = NULL;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || (*end && !strchr(" \t\n\r,", *end))) {
            size_t n = strcspn(p, " \t\n\r,");
            snprintf(msg, cap, "\"%.*s\" is not a token id", (int)(n > 40 ? 40 : n), p);
            return -1;
        }
        if (v < 0 || v >= n_vocab) {
            snprintf(msg, cap, "token id %lld is outside the vocabulary [0, %d)", v, n_vocab);
            return -1;
        }
        if (gm_tokens_push(out, (int32_t)v) != 0) {
            snprintf(msg, cap, "out of memory");
            return -1;
        }
        p = end;
    }
    return 0;
}

double tool_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

long tool_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kib;
}

long long tool_file_size(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    return (long long)st.st_size;
}

char *tool_read_all(FILE *f, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                free(buf);
                return NULL;
            }
            break;
        }
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

int tool_n_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
