/* gmd-options.h — request options (docs/dbus-api.md §5), one validation for both front ends.
 *
 * Front ends walk their own encoding (a{sv} on D-Bus, a JSON object on the socket) and
 * hand every key to gmd_options_set() as a GmdValue; the range checks, the "which method
 * accepts which key" rules and the error messages live here only. */
#pragma once

#include <glib.h>
#include <stdint.h>

#include "decoder/sampler.h"
#include "gmd-limits.h"

G_BEGIN_DECLS

/* Where an options dictionary was given: decides which keys are allowed. */
typedef enum {
  GMD_OPTIONS_GENERATE,      /* Manager.Generate / socket generate */
  GMD_OPTIONS_RESPOND,       /* Manager.Respond */
  GMD_OPTIONS_SESSION_OPEN,  /* Manager.OpenSession / socket session.open */
  GMD_OPTIONS_SESSION_SEND,  /* Session.Send / socket session.send */
  GMD_OPTIONS_CONFIG,        /* [defaults] of the config file */
} GmdOptionsScope;

/* Bits of GmdOptions.set: which keys the caller gave. */
typedef enum {
  GMD_OPT_HANDLE_TOKEN      = 1u << 0,
  GMD_OPT_SYSTEM            = 1u << 1,
  GMD_OPT_THINKING          = 1u << 2,
  GMD_OPT_RAW               = 1u << 3,
  GMD_OPT_TEMPERATURE       = 1u << 4,
  GMD_OPT_TOP_K             = 1u << 5,
  GMD_OPT_TOP_P             = 1u << 6,
  GMD_OPT_MIN_P             = 1u << 7,
  GMD_OPT_REPEAT_PENALTY    = 1u << 8,
  GMD_OPT_REPEAT_LAST_N     = 1u << 9,
  GMD_OPT_PRESENCE_PENALTY  = 1u << 10,
  GMD_OPT_FREQUENCY_PENALTY = 1u << 11,
  GMD_OPT_SEED              = 1u << 12,
  GMD_OPT_MAX_TOKENS        = 1u << 13,
  GMD_OPT_STOP              = 1u << 14,
  GMD_OPT_IMAGE_TOKENS      = 1u << 15,
  GMD_OPT_CONTEXT_SIZE      = 1u << 16,
  GMD_OPT_HISTORY           = 1u << 17,
} GmdOptionBits;

typedef enum {
  GMD_ROLE_USER,
  GMD_ROLE_MODEL,
} GmdRole;

/* One earlier message of a conversation (history option, Session.GetHistory). */
typedef struct {
  GmdRole role;
  char *text;                 /* text messages; NULL for a media entry */
  /* GetHistory only: media parts of kept turns, as (type, soft_tokens) */
  GArray *media;              /* of GmdHistoryMedia, may be NULL */
  /* A session's kept user turn with media: its parts in order (GmdPart*: text, and
   * images as their encoded soft tokens), rendered instead of text; NULL: text only.
   * Immutable once set: copies share it. */
  GPtrArray *parts;
} GmdMessage;

typedef struct {
  int type;                   /* GmdPartType of gmd-content.h */
  guint32 soft_tokens;
} GmdHistoryMedia;

GmdMessage *gmd_message_new (GmdRole role, const char *text);
GmdMessage *gmd_message_copy (const GmdMessage *m);   /* media copied, parts shared */
void gmd_message_free (GmdMessage *m);
const char *gmd_role_name (GmdRole role);          /* "user", "model" */
gboolean gmd_role_from_name (const char *name, GmdRole *out);

typedef struct {
  guint32 set;               /* GmdOptionBits given explicitly */
  char *handle_token;
  char *system;
  gboolean thinking;
  gboolean raw;
  gm_sampler_params sampling; /* temperature … frequency_penalty, seed */
  gint32 max_tokens;          /* -1 = until end or full context */
  GPtrArray *stop;            /* char*, never NULL */
  guint32 image_tokens;       /* 70, 140, 280, 560, 1120 */
  guint32 context_size;       /* 0 = the service's */
  GPtrArray *history;         /* GmdMessage*, never NULL */
} GmdOptions;

/* Gemma 4's generation config: temperature 1, top_k 64, top_p 0.95, max_tokens 1024,
 * image_tokens 280, the rest off. */
GmdOptions *gmd_options_new (void);
GmdOptions *gmd_options_copy (const GmdOptions *o);
void gmd_options_free (GmdOptions *o);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GmdOptions, gmd_options_free)

/* A key's value as decoded by a front end. Integers of any D-Bus/JSON integer type arrive
 * as INT (uint64 values above INT64_MAX as UINT); a number with a fraction as DOUBLE. */
typedef enum {
  GMD_VALUE_BOOL,
  GMD_VALUE_INT,
  GMD_VALUE_UINT,
  GMD_VALUE_DOUBLE,
  GMD_VALUE_STRING,
  GMD_VALUE_STRV,
  GMD_VALUE_HISTORY,   /* already parsed by the front end: GPtrArray of GmdMessage* */
  GMD_VALUE_OTHER,     /* any other type: always an error ("expected …, got <type_name>") */
} GmdValueType;

typedef struct {
  GmdValueType type;
  const char *type_name;     /* the front end's name of the type, for messages ("int32", "a string") */
  union {
    gboolean b;
    gint64 i;
    guint64 u;
    double d;
    const char *s;
    const char *const *strv;
    GPtrArray *history;      /* borrowed; set() copies */
  };
} GmdValue;

/* Validates key=value for scope and stores it in o. max_tokens_limit/stop limits come from
 * limits (may be NULL: built-in defaults). field_prefix is the path of the options object
 * ("options"), used in messages: "options.top_p: must be in (0, 1], got 1.5".
 * Unknown key, key not allowed in scope, wrong type, out of range: GMD_ERROR_INVALID_ARGUMENT;
 * too many/too long stop strings: GMD_ERROR_LIMIT_EXCEEDED. A key given twice is an error
 * except in GMD_OPTIONS_CONFIG (--set over the file). On error o is unchanged. */
gboolean gmd_options_set (GmdOptions *o, GmdOptionsScope scope, const char *key,
                          const GmdValue *value, const GmdLimits *limits,
                          const char *field_prefix, GError **error);

/* Checks the keys' combinations after all are set (raw excludes system and thinking).
 * The socket, whose request ids name requests, needs only this. */
gboolean gmd_options_check_combinations (const GmdOptions *o, const char *field_prefix,
                                         GError **error);

/* gmd_options_check_combinations, plus D-Bus's rule that GENERATE and SESSION_SEND
 * require handle_token (it names the Request object). */
gboolean gmd_options_check (const GmdOptions *o, GmdOptionsScope scope,
                            const char *field_prefix, GError **error);

/* Fills every key not in o->set from defaults (a session's options, then the config's).
 * The value is copied always, the bit only where defaults has it, so a later merge can
 * still supply it. handle_token and history are never inherited. */
void gmd_options_merge_defaults (GmdOptions *o, const GmdOptions *defaults);

/* The DefaultOptions property: a{sv} of the defaultable keys. */
GVariant *gmd_options_to_variant (const GmdOptions *o);

G_END_DECLS
