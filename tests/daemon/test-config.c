/* test-config.c — configuration file, --set overrides and limits (daemon/gmd-config.c,
 * daemon/gmd-limits.c), and that data/gemmad.conf documents the real defaults. */
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

#include "gmd-config.h"
#include "gmd-error.h"

static char *tmp_dir;

/* Field by field: the struct has padding, so memcmp would compare garbage. */
static gboolean
limits_equal (const GmdLimits *a, const GmdLimits *b)
{
  g_autoptr (GVariant) va = g_variant_ref_sink (gmd_limits_to_variant (a, 0));
  g_autoptr (GVariant) vb = g_variant_ref_sink (gmd_limits_to_variant (b, 0));

  return g_variant_equal (va, vb) && a->max_connections_per_uid == b->max_connections_per_uid &&
         a->max_image_pixels == b->max_image_pixels;
}

static char *
write_conf (const char *text)
{
  char *path = g_build_filename (tmp_dir, "gemmad.conf", NULL);

  g_assert_true (g_file_set_contents (path, text, -1, NULL));
  return path;
}

/* Loads text; expects failure with exactly "<path>: <message>". */
static void
load_fails (const char *text, const char *message)
{
  g_autofree char *path = write_conf (text);
  g_autofree char *expected = g_strdup_printf ("%s: %s", path, message);
  g_autoptr (GError) error = NULL;
  g_autoptr (GmdConfig) c = gmd_config_load (path, &error);

  g_assert_null (c);
  g_assert_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT);
  if (message != NULL)
    g_assert_cmpstr (error->message, ==, expected);
  g_assert_null (strchr (error->message, '\n'));
}

static void
set_fails (GmdConfig *c, const char *key, const char *value, const char *message)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GmdConfig) before = gmd_config_copy (c);

  g_assert_false (gmd_config_set (c, key, value, &error));
  g_assert_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT);
  if (message != NULL)
    g_assert_cmpstr (error->message, ==, message);
  /* unchanged */
  g_assert_true (limits_equal (&before->limits, &c->limits));
  g_assert_cmpuint (before->socket_mode, ==, c->socket_mode);
  g_assert_cmpint (before->bus, ==, c->bus);
  g_assert_cmpstrv (before->allowed_users, c->allowed_users);
  g_assert_cmpfloat (before->defaults->sampling.temperature, ==, c->defaults->sampling.temperature);
}

static void
set_ok (GmdConfig *c, const char *key, const char *value)
{
  g_autoptr (GError) error = NULL;

  g_assert_true (gmd_config_set (c, key, value, &error));
  g_assert_no_error (error);
}

static void
assert_default_values (const GmdConfig *c)
{
  GmdLimits limits;
  g_autoptr (GmdOptions) builtin = gmd_options_new ();
  g_autoptr (GVariant) a = g_variant_ref_sink (gmd_options_to_variant (builtin));
  g_autoptr (GVariant) b = g_variant_ref_sink (gmd_options_to_variant (c->defaults));

  gmd_limits_init_default (&limits);
  g_assert_null (c->model_path);
  g_assert_null (c->mmproj_path);
  g_assert_cmpuint (c->context_size, ==, 0);
  g_assert_cmpuint (c->threads, ==, 0);
  g_assert_cmpuint (c->batch, ==, 512);
  g_assert_cmpint (c->bus, ==, GMD_BUS_SYSTEM);
  g_assert_null (c->socket_path);
  g_assert_cmpuint (c->socket_mode, ==, 0666);
  g_assert_null (c->allowed_users);
  g_assert_null (c->allowed_groups);
  g_assert_cmpuint (c->cache_slots, ==, 4);
  g_assert_cmpuint (c->idle_exit, ==, 0);
  g_assert_cmpuint (c->shutdown_grace, ==, 5);
  g_assert_true (limits_equal (&limits, &c->limits));
  g_assert_true (g_variant_equal (a, b));
}

static void
test_defaults (void)
{
  g_autoptr (GmdConfig) c = gmd_config_new_default ();

  assert_default_values (c);
  g_assert_null (c->source);
  g_assert_cmpuint (c->limits.max_queue, ==, 64);
  g_assert_cmpuint (c->limits.max_queued_per_client, ==, 4);
  g_assert_cmpuint (c->limits.max_sessions_per_client, ==, 8);
  g_assert_cmpuint (c->limits.max_text_bytes, ==, 1048576);
  g_assert_cmpuint (c->limits.max_media_bytes, ==, 20971520);
  g_assert_cmpuint (c->limits.max_media_parts, ==, 16);
  g_assert_cmpuint (c->limits.max_audio_seconds, ==, 300);
  g_assert_cmpuint (c->limits.max_stop_strings, ==, 8);
  g_assert_cmpuint (c->limits.max_stop_bytes, ==, 256);
  g_assert_cmpuint (c->limits.session_idle_timeout, ==, 1800);
  g_assert_cmpuint (c->limits.max_line_bytes, ==, 33554432);
  g_assert_cmpuint (c->limits.max_fds_per_line, ==, 16);
  g_assert_cmpuint (c->limits.max_connections_per_uid, ==, 32);
  g_assert_cmpuint (c->limits.max_image_pixels, ==, 50000000);
  g_assert_cmpuint (c->limits.max_prompt_tokens, ==, 0);
  g_assert_cmpuint (c->limits.max_tokens_limit, ==, 0);
}

static void
test_good_file (void)
{
  g_autofree char *path = write_conf (
    "# comment\n"
    "[model]\n"
    "path = /var/lib/gemmad/gemma-4-e2b-it-Q8_0.gguf\n"
    "mmproj=/var/lib/gemmad/mmproj.gguf\n"
    "context_size = 8192\n"
    "threads = 6\n"
    "batch = 256\n"
    "\n"
    "[service]\n"
    "bus = session\n"
    "socket = /run/user/1000/gemmad/gemmad.sock\n"
    "socket_mode = 0660\n"
    "allowed_users = alice, bob;1000\n"
    "allowed_groups = gemma\n"
    "cache_slots = 2\n"
    "idle_exit = 300\n"
    "shutdown_grace = 10\n"
    "[limits]\n"
    "max_queue = 10\n"
    "max_queued_per_client = 2\n"
    "max_media_bytes = 8M\n"
    "max_text_bytes = 512KiB\n"
    "max_line_bytes = 1G\n"
    "max_tokens_limit = 2048\n"
    "max_image_pixels = 1000000\n"
    "[defaults]\n"
    "temperature = 0.7\n"
    "top_k = 40\n"
    "max_tokens = 512\n"
    "thinking = true\n"
    "image_tokens = 560\n"
    "repeat_penalty = 1\n");
  g_autoptr (GError) error = NULL;
  g_autoptr (GmdConfig) c = gmd_config_load (path, &error);
  const char *users[] = { "alice", "bob", "1000", NULL };
  const char *groups[] = { "gemma", NULL };

  g_assert_no_error (error);
  g_assert_cmpstr (c->source, ==, path);
  g_assert_cmpstr (c->model_path, ==, "/var/lib/gemmad/gemma-4-e2b-it-Q8_0.gguf");
  g_assert_cmpstr (c->mmproj_path, ==, "/var/lib/gemmad/mmproj.gguf");
  g_assert_cmpuint (c->context_size, ==, 8192);
  g_assert_cmpuint (c->threads, ==, 6);
  g_assert_cmpuint (c->batch, ==, 256);
  g_assert_cmpint (c->bus, ==, GMD_BUS_SESSION);
  g_assert_cmpstr (c->socket_path, ==, "/run/user/1000/gemmad/gemmad.sock");
  g_assert_cmpuint (c->socket_mode, ==, 0660);
  g_assert_cmpstrv (c->allowed_users, users);
  g_assert_cmpstrv (c->allowed_groups, groups);
  g_assert_cmpuint (c->cache_slots, ==, 2);
  g_assert_cmpuint (c->idle_exit, ==, 300);
  g_assert_cmpuint (c->shutdown_grace, ==, 10);
  g_assert_cmpuint (c->limits.max_queue, ==, 10);
  g_assert_cmpuint (c->limits.max_queued_per_client, ==, 2);
  g_assert_cmpuint (c->limits.max_media_bytes, ==, 8 << 20);
  g_assert_cmpuint (c->limits.max_text_bytes, ==, 512 << 10);
  g_assert_cmpuint (c->limits.max_line_bytes, ==, 1 << 30);
  g_assert_cmpuint (c->limits.max_tokens_limit, ==, 2048);
  g_assert_cmpuint (c->limits.max_image_pixels, ==, 1000000);
  g_assert_cmpuint (c->limits.max_stop_strings, ==, 8);   /* untouched keys keep defaults */
  g_assert_cmpfloat (c->defaults->sampling.temperature, ==, 0.7f);
  g_assert_cmpint (c->defaults->sampling.top_k, ==, 40);
  g_assert_cmpint (c->defaults->max_tokens, ==, 512);
  g_assert_true (c->defaults->thinking);
  g_assert_cmpuint (c->defaults->image_tokens, ==, 560);
  g_assert_cmpfloat (c->defaults->sampling.repeat_penalty, ==, 1.0f);
  g_assert_cmpuint (c->defaults->set, ==, GMD_OPT_TEMPERATURE | GMD_OPT_TOP_K | GMD_OPT_MAX_TOKENS |
                                            GMD_OPT_THINKING | GMD_OPT_IMAGE_TOKENS | GMD_OPT_REPEAT_PENALTY);

  /* a copy is deep */
  {
    g_autoptr (GmdConfig) copy = gmd_config_copy (c);
    g_clear_pointer (&c, gmd_config_free);
    g_assert_cmpstr (copy->model_path, ==, "/var/lib/gemmad/gemma-4-e2b-it-Q8_0.gguf");
    g_assert_cmpstrv (copy->allowed_users, users);
    g_assert_cmpint (copy->defaults->sampling.top_k, ==, 40);
    g_assert_cmpstr (copy->source, ==, path);
  }

  /* an empty file is all defaults */
  {
    g_autofree char *empty = write_conf ("");
    g_autoptr (GmdConfig) e = gmd_config_load (empty, &error);
    g_assert_no_error (error);
    assert_default_values (e);
  }
}

static void
test_bad_files (void)
{
  load_fails ("[model]\nthreds = 4\n", "model.threds: unknown key");
  load_fails ("[modle]\npath = x\n", "unknown group 'modle' (known: model, service, limits, defaults)");
  load_fails ("[extra]\n", "unknown group 'extra' (known: model, service, limits, defaults)");
  load_fails ("[limits]\nmax_queue = many\n", "limits.max_queue: expected an integer in [1, 1000000], got 'many'");
  load_fails ("[limits]\nmax_queue = 0\n", "limits.max_queue: expected an integer in [1, 1000000], got '0'");
  load_fails ("[limits]\nmax_queue = -5\n", NULL);
  load_fails ("[limits]\nmax_media_bytes = 5T\n",
              "limits.max_media_bytes: expected an integer in [0, 4294967296] (K, M, G suffixes allowed), got '5T'");
  load_fails ("[service]\nbus = both\n", "service.bus: expected 'system', 'session' or 'none', got 'both'");
  load_fails ("[service]\nsocket_mode = 0888\n",
              "service.socket_mode: expected octal permission bits (0 … 0777), got '0888'");
  load_fails ("[service]\nallowed_users = alice, ../etc\n",
              "service.allowed_users: expected user or group names or numeric ids, got '../etc'");
  load_fails ("[model]\ncontext_size = 16\n",
              "model.context_size: expected 0 or an integer in [32, 2147483647], got '16'");
  load_fails ("[defaults]\ntemperature = hot\n", "defaults.temperature: expected a number, got 'hot'");
  load_fails ("[defaults]\ntop_p = 1.5\n", "defaults.top_p: must be in (0, 1], got 1.5");
  load_fails ("[defaults]\nseed = 42\n", "defaults.seed: not allowed in the configuration's [defaults]");
  load_fails ("[defaults]\nstop = END\n", "defaults.stop: not allowed in the configuration's [defaults]");
  load_fails ("[defaults]\nthinking = yes\n", "defaults.thinking: expected a boolean, got 'yes'");
  load_fails ("[defaults]\ntempreture = 1\n", "defaults.tempreture: unknown key");
  load_fails ("[model]\nthreads[de] = 4\n", "model: unknown key 'threads[de]'");
  /* rules across keys, whichever comes first in the file */
  load_fails ("[defaults]\nmax_tokens = 4096\n[limits]\nmax_tokens_limit = 2048\n",
              "defaults.max_tokens: 4096 is above limits.max_tokens_limit (2048)");
  load_fails ("[limits]\nmax_tokens_limit = 2048\n[defaults]\nmax_tokens = 4096\n",
              "defaults.max_tokens: must be -1 or in [1, 2048], got 4096");
  load_fails ("[limits]\nmax_queue = 2\n", "limits.max_queued_per_client: 4 is above limits.max_queue (2)");
  /* not a key file at all */
  load_fails ("this is not ini\n", NULL);
  load_fails ("[model\n", NULL);
}

static void
test_missing (void)
{
  g_autofree char *path = g_build_filename (tmp_dir, "does-not-exist.conf", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GmdConfig) c = NULL;

  c = gmd_config_load (path, &error);
  g_assert_null (c);
  g_assert_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT);
  g_assert_true (g_str_has_prefix (error->message, path));
  g_clear_error (&error);

  c = gmd_config_load_or_default (path, FALSE, &error);
  g_assert_null (c);
  g_assert_nonnull (error);
  g_clear_error (&error);

  c = gmd_config_load_or_default (path, TRUE, &error);
  g_assert_no_error (error);
  assert_default_values (c);
  g_clear_pointer (&c, gmd_config_free);

  c = gmd_config_load_or_default (NULL, FALSE, &error);
  g_assert_no_error (error);
  assert_default_values (c);
  g_clear_pointer (&c, gmd_config_free);

  /* missing_ok covers only a missing file, not a bad one */
  {
    g_autofree char *bad = write_conf ("[nope]\n");
    c = gmd_config_load_or_default (bad, TRUE, &error);
    g_assert_null (c);
    g_assert_nonnull (error);
  }
}

/* The --set GROUP.KEY=VALUE path. */
static void
test_set (void)
{
  g_autoptr (GmdConfig) c = gmd_config_new_default ();
  g_autoptr (GError) error = NULL;

  set_ok (c, "limits.max_queue", "2");
  set_ok (c, "limits.max_queued_per_client", "1");
  g_assert_cmpuint (c->limits.max_queue, ==, 2);
  set_ok (c, "limits.max_media_bytes", "0");
  g_assert_cmpuint (c->limits.max_media_bytes, ==, 0);
  set_ok (c, "limits.max_line_bytes", "64k");
  g_assert_cmpuint (c->limits.max_line_bytes, ==, 65536);
  set_ok (c, "limits.max_text_bytes", " 2MB ");
  g_assert_cmpuint (c->limits.max_text_bytes, ==, 2 << 20);
  set_ok (c, "service.socket_mode", "600");
  g_assert_cmpuint (c->socket_mode, ==, 0600);
  set_ok (c, "service.socket_mode", "0");
  g_assert_cmpuint (c->socket_mode, ==, 0);
  set_ok (c, "service.bus", "none");
  g_assert_cmpint (c->bus, ==, GMD_BUS_NONE);
  set_ok (c, "service.socket", "/tmp/x.sock");
  g_assert_cmpstr (c->socket_path, ==, "/tmp/x.sock");
  set_ok (c, "service.socket", "");
  g_assert_null (c->socket_path);
  set_ok (c, "service.allowed_groups", "wheel 10");
  g_assert_cmpuint (g_strv_length (c->allowed_groups), ==, 2);
  set_ok (c, "service.allowed_groups", " , ");
  g_assert_null (c->allowed_groups);
  set_ok (c, "model.path", "models/tiny.gguf");
  g_assert_cmpstr (c->model_path, ==, "models/tiny.gguf");
  set_ok (c, "model.context_size", "0");
  set_ok (c, "model.context_size", "32");
  g_assert_cmpuint (c->context_size, ==, 32);
  set_ok (c, "defaults.temperature", "0");
  set_ok (c, "defaults.temperature", "0.25");   /* --set over the file's value */
  g_assert_cmpfloat (c->defaults->sampling.temperature, ==, 0.25f);
  set_ok (c, "defaults.max_tokens", "-1");
  g_assert_cmpint (c->defaults->max_tokens, ==, -1);
  set_ok (c, "defaults.thinking", "false");
  g_assert_false (c->defaults->thinking);

  set_fails (c, "max_queue", "2", "expected GROUP.KEY (e.g. limits.max_queue), got 'max_queue'");
  set_fails (c, "limit.max_queue", "2", "unknown group 'limit' (known: model, service, limits, defaults)");
  set_fails (c, "limits.max_qeue", "2", "limits.max_qeue: unknown key");
  set_fails (c, "limits.max_queue", "2.5", NULL);
  set_fails (c, "limits.max_queue", "", NULL);
  set_fails (c, "limits.max_queue", "99999999999999999999999", NULL);
  set_fails (c, "limits.max_media_bytes", "18446744073709551615K", NULL);
  set_fails (c, "limits.max_fds_per_line", "254", "limits.max_fds_per_line: expected an integer in [0, 253], got '254'");
  set_fails (c, "limits.max_queue", "1\n2", NULL);
  set_fails (c, "service.socket_mode", "01777", NULL);
  set_fails (c, "service.socket_mode", "rw-rw-rw-", NULL);
  set_fails (c, "service.allowed_users", "-root", NULL);
  set_fails (c, "defaults.image_tokens", "100",
             "defaults.image_tokens: must be one of 70, 140, 280, 560, 1120, got 100");
  set_fails (c, "defaults.system", "x", "defaults.system: not allowed in the configuration's [defaults]");
  set_fails (c, "defaults.handle_token", "x", NULL);
  set_fails (c, "defaults.top_k", "1.5", "defaults.top_k: expected an integer, got '1.5'");
  set_fails (c, "model.path", "\xff", "model.path: value is not valid UTF-8");
  set_fails (c, "model.path", NULL, "model.path: missing value");

  /* validate: a cross-key rule broken by --set is found afterwards */
  g_assert_true (gmd_config_validate (c, NULL));
  set_ok (c, "defaults.max_tokens", "3000");
  set_ok (c, "limits.max_tokens_limit", "1000");
  g_assert_false (gmd_config_validate (c, &error));
  g_assert_cmpstr (error->message, ==, "defaults.max_tokens: 3000 is above limits.max_tokens_limit (1000)");
}

static void
test_limits_variant (void)
{
  GmdLimits l;
  g_autoptr (GVariant) v = NULL;
  g_autoptr (GVariant) w = NULL;
  g_autoptr (GVariantDict) d = NULL;
  guint32 u;
  guint64 t;
  const char *u32_keys[] = { "max_queue", "max_queued_per_client", "max_sessions_per_client",
                             "max_prompt_tokens", "max_tokens_limit", "max_media_parts",
                             "max_audio_seconds", "max_stop_strings", "max_stop_bytes",
                             "session_idle_timeout", "max_fds_per_line" };
  const char *u64_keys[] = { "max_text_bytes", "max_media_bytes", "max_line_bytes",
                             "max_image_pixels" };

  gmd_limits_init_default (&l);
  v = g_variant_ref_sink (gmd_limits_to_variant (&l, 4096));
  g_assert_cmpstr (g_variant_get_type_string (v), ==, "a{sv}");
  g_assert_cmpuint (g_variant_n_children (v), ==, G_N_ELEMENTS (u32_keys) + G_N_ELEMENTS (u64_keys));
  d = g_variant_dict_new (v);
  for (guint i = 0; i < G_N_ELEMENTS (u32_keys); i++)
    g_assert_true (g_variant_dict_lookup (d, u32_keys[i], "u", &u));
  for (guint i = 0; i < G_N_ELEMENTS (u64_keys); i++)
    g_assert_true (g_variant_dict_lookup (d, u64_keys[i], "t", &t));
  g_assert_true (g_variant_dict_lookup (d, "max_prompt_tokens", "u", &u) && u == 4096);
  g_assert_true (g_variant_dict_lookup (d, "max_tokens_limit", "u", &u) && u == 4096);
  g_assert_true (g_variant_dict_lookup (d, "max_media_bytes", "t", &t) && t == 20971520);
  g_assert_true (g_variant_dict_lookup (d, "max_line_bytes", "t", &t) && t == 33554432);
  g_assert_true (g_variant_dict_lookup (d, "max_queue", "u", &u) && u == 64);
  g_assert_true (g_variant_dict_lookup (d, "session_idle_timeout", "u", &u) && u == 1800);

  /* configured caps below the window stay; above it, the window is what is in force */
  l.max_prompt_tokens = 1000;
  l.max_tokens_limit = 100000;
  w = g_variant_ref_sink (gmd_limits_to_variant (&l, 4096));
  g_variant_dict_unref (d);
  d = g_variant_dict_new (w);
  g_assert_true (g_variant_dict_lookup (d, "max_prompt_tokens", "u", &u) && u == 1000);
  g_assert_true (g_variant_dict_lookup (d, "max_tokens_limit", "u", &u) && u == 4096);
}

/* Uncommenting every key of data/gemmad.conf must give exactly the built-in defaults:
 * the example documents the real values. */
static void
test_example_file (void)
{
  const char *data_dir = g_getenv ("GEMMAD_TEST_DATA");
  g_autofree char *root = NULL;
  g_autofree char *example = NULL;
  g_autofree char *text = NULL;
  g_autoptr (GString) uncommented = g_string_new (NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GmdConfig) c = NULL;
  g_auto (GStrv) lines = NULL;
  g_autofree char *path = NULL;
  guint keys = 0;

  if (data_dir == NULL)
    {
      g_test_skip ("GEMMAD_TEST_DATA not set (run through meson test)");
      return;
    }
  root = g_path_get_dirname (data_dir);            /* tests/ */
  example = g_build_filename (root, "..", "data", "gemmad.conf", NULL);
  g_assert_true (g_file_get_contents (example, &text, NULL, &error));

  /* as shipped (all commented out) */
  c = gmd_config_load (example, &error);
  g_assert_no_error (error);
  assert_default_values (c);
  g_clear_pointer (&c, gmd_config_free);

  lines = g_strsplit (text, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++)
    {
      const char *l = lines[i];
      if (l[0] == '#' && g_ascii_islower (l[1]) && strchr (l, '=') != NULL)
        {
          g_string_append_printf (uncommented, "%s\n", l + 1);
          keys++;
        }
      else
        g_string_append_printf (uncommented, "%s\n", l);
    }
  /* every key of the reference is in the example */
  g_assert_cmpuint (keys, ==, 5 + 8 + 16 + 11);
  path = write_conf (uncommented->str);
  c = gmd_config_load (path, &error);
  g_assert_no_error (error);
  assert_default_values (c);
}

/* Flags outlive a reload, and a default file created after start is read by the reload. */
static void
test_reload_keeps_overrides (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *path = g_build_filename (tmp_dir, "created-later.conf", NULL);
  g_unlink (path);
  g_autoptr (GmdConfig) c = gmd_config_load_or_default (path, TRUE, &error);
  g_assert_no_error (error);
  g_assert_true (c->source_optional);
  g_assert_true (gmd_config_override (c, "limits.max_queue", "7", &error));
  g_assert_no_error (error);
  g_assert_cmpuint (c->limits.max_queue, ==, 7);

  g_assert_true (g_file_set_contents (path, "[limits]\nmax_queue=9\nmax_media_parts=3\n", -1, NULL));
  g_autoptr (GmdConfig) r = gmd_config_reload (c, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (r->limits.max_queue, ==, 7);       /* the flag wins over the file */
  g_assert_cmpuint (r->limits.max_media_parts, ==, 3); /* the new file is read */

  g_assert_true (g_file_set_contents (path, "[limits]\nmax_queue=lots\n", -1, NULL));
  g_autoptr (GmdConfig) bad = gmd_config_reload (c, &error);
  g_assert_null (bad);
  g_assert_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT);
  g_unlink (path);
}

int
main (int argc, char **argv)
{
  int ret;

  g_test_init (&argc, &argv, NULL);
  tmp_dir = g_dir_make_tmp ("gmd-test-config-XXXXXX", NULL);
  g_assert_nonnull (tmp_dir);

  g_test_add_func ("/config/defaults", test_defaults);
  g_test_add_func ("/config/good-file", test_good_file);
  g_test_add_func ("/config/bad-files", test_bad_files);
  g_test_add_func ("/config/missing", test_missing);
  g_test_add_func ("/config/set", test_set);
  g_test_add_func ("/config/limits-variant", test_limits_variant);
  g_test_add_func ("/config/example-file", test_example_file);
  g_test_add_func ("/config/reload-keeps-overrides", test_reload_keeps_overrides);
  ret = g_test_run ();
  {
    g_autofree char *conf = g_build_filename (tmp_dir, "gemmad.conf", NULL);
    g_unlink (conf);
  }
  g_rmdir (tmp_dir);
  g_free (tmp_dir);
  return ret;
}
