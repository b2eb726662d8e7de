/* clipped-linear.c — loading a clippable linear and its clamp scalars. */
#include "core/clipped-linear.h"

#include <float.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/tensor-view.h"

int gm_clipped_linear_load(const gm_gguf *g, const char *base, int64_t rows, int64_t cols,
                           gm_clipped_linear *l, gm_error *err)
{
    char name[256];
    snprintf(name, sizeof name, "%s.weight", base);
    const int64_t ne[2] = { cols, rows };
    int rc = gm_tensor_matrix(g, name, 2, ne, &l->w, err);
    static const char *const sfx[4] = { "input_min", "input_max", "output_min", "output_max" };
    float *dst[4] = { &l->in_min, &l->in_max, &l->out_min, &l->out_max };
    bool *pres[4] = { &l->clamp_in, &l->clamp_in, &l->clamp_out, &l->clamp_out };
    static const int64_t one[1] = { 1 };
    l->clamp_in = l->clamp_out = false;
    for (int i = 0; i < 4 && rc == GM_OK; i++) {
        *dst[i] = (i % 2) ? FLT_MAX : -FLT_MAX;
        snprintf(name, sizeof name, "%s.%s", base, sfx[i]);
        if (!gm_gguf_find_tensor(g, name))
            continue;
        float *v = gm_tensor_floats(g, name, 1, one, err);
        if (!v)
            return err ? err->code : GM_ERR_FORMAT;
        *dst[i] = v[0];
        *pres[i] = true;
        free(v);
    }
    if (rc == GM_OK && (l->in_min > l->in_max || l->out_min > l->out_max))
        rc = gm_set_error(err, GM_ERR_FORMAT, "%s: clamp bounds of %s.weight are inverted",
                          g->path, base);
    return rc;
}
