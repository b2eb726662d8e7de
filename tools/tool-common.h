/* tool-common.h — what gemma-run, gemma-bench and gemma-mkmodel share: option parsing,
 * exit codes, timing, resident memory, reading input. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "decoder/tokenizer.h"

/* Exit codes of the tools. */
enum {
    TOOL_EXIT_OK = 0,
    TOOL_EXIT_USAGE = 1,
    TOOL_EXIT_LOAD = 2,
    TOOL_EXIT_RUNTIME = 3,
};

/* Command-line cursor. Options take their value as the next argument or after '='
 * ("--temp 0.7" or "--temp=0.7"). A bad or missing value prints one line naming the
 * option and sets `error`. */
typedef struct tool_args {
    int argc;
    char **argv;
    int i;            /* index of the argument being looked at */
    const char *prog; /* for messages */
    bool error;
} tool_args;

void tool_args_init(tool_args *a, int argc, char **argv, const char *prog);
/* argv[i] is exactly one of the names (alt may be NULL). */
bool tool_flag(tool_args *a, const char *name, const char *alt);
/* Option with a value: true when argv[i] names it (the value is consumed; on a missing
 * or invalid value a->error is set and the function still returns true). */
bool tool_opt_str(tool_args *a, const char *name, const char *alt, const char **out);
bool tool_opt_long(tool_args *a, const char *name, const char *alt, long min, long max, long *out);
bool tool_opt_double(tool_args *a, const char *name, const char *alt, double min, double max, double *out);

/* Strict number parsing: the whole string, within [min, max]. 0 or -1. */
int tool_parse_long(const char *s, long min, long max, long *out);
int tool_parse_double(const char *s, double min, double max, double *out);

/* Parses whitespace/comma-separated token ids ("2 105 1645"), each in [0, n_vocab).
 * Returns 0, or -1 with a message in msg. */
int tool_parse_ids(const char *s, int32_t n_vocab, gm_tokens *out, char *msg, size_t cap);

/* Monotonic clock in seconds. */
double tool_now(void);
/* VmRSS of this process in KiB (from /proc/self/status), or -1. */
long tool_rss_kib(void);
/* Size of a file in bytes, or -1. */
long long tool_file_size(const char *path);
/* Reads all of f into a malloc'd NUL-terminated buffer; NULL on error. */
char *tool_read_all(FILE *f, size_t *len);
/* Number of online CPUs (>= 1). */
int tool_n_cpus(void);
