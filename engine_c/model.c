/* Loading a llama-family model: read every hyperparameter from the GGUF,
 * bind weight views into the map (nothing is copied), refuse what we do not
 * compute correctly with a message that names it. */
#include "model.h"
#include "errors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ERRBUF char *err, size_t err_len

/* Required integer hyperparameter "<arch>.<name>". */
static int req_int(const rs_gguf *g, const char *arch, const char *name, int64_t lo, int64_t hi,
                   int32_t *out, ERRBUF) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    int64_t v;
    int rc = rs_gguf_get_i64(g, key, &v, err, err_len);
    if (rc < 0) return rs_fail(err, err_len, RS_ERR_FORMAT, "model metadata lacks %s", key);
    if (rc) return rc;
    if (v < lo || v > hi)
        return rs_fail(err, err_len, RS_ERR_FORMAT, "model metadata %s = %lld is out of range [%lld, %lld]",
                       key, (long long)v, (long long)lo, (long long)hi);
    *out = (int32_t)v;
    return RS_OK;
}

/* Optional integer; *out keeps its default when absent. */
static int opt_int(const rs_gguf *g, const char *arch, const char *name, int64_t lo, int64_t hi,
                   int32_t *out, ERRBUF) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    int64_t v;
    int rc = rs_gguf_get_i64(g, key, &v, err, err_len);
    if (rc < 0) return RS_OK;
    if (rc) return rc;
    if (v < lo || v > hi)
        return rs_fail(err, err_len, RS_ERR_FORMAT, "model metadata %s = %lld is out of range [%lld, %lld]",
                       key, (long long)v, (long long)lo, (long long)hi);
    *out = (int32_t)v;
    return RS_OK;
}

static int opt_float(const rs_gguf *g, const char *arch, const char *name, double *out, ERRBUF) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    int rc = rs_gguf_get_f64(g, key, out, err, err_len);
    return rc < 0 ? RS_OK : rc;
}

static int bind_matrix(const rs_gguf *g, const char *name, int rows, int cols, rs_matrix *m,
                       uint64_t *bytes, ERRBUF) {
    const rs_gguf_tensor *t = rs_gguf_find_tensor(g, name);
    if (!t) return rs_fail(err, err_len, RS_ERR_FORMAT, "model lacks tensor %s", name);
    if (t->type != RS_GGML_F32 && t->type != RS_GGML_F16 && t->type != RS_GGML_BF16 &&
        t->type != RS_GGML_Q4_0 && t->type != RS_GGML_Q4_1 && t->type != RS_GGML_Q8_0)
        return rs_fail(err, err_len, RS_ERR_UNSUPPORTED,
                       "tensor %s has type %s (%d); supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1",
                       name, rs_ggml_type_name(t->type), t->type);
    if (t->n_dims > 2 || t->ne[0] != (uint64_t)cols || t->ne[1] != (uint64_t)rows)
        return rs_fail(err, err_len, RS_ERR_FORMAT, "tensor %s has shape [%llu, %llu], expected [%d, %d]",
                       name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], cols, rows);
    if (!t->data)
        return rs_fail(err, err_len, RS_ERR_FORMAT, "tensor %s: %d columns are not whole blocks of %s",
                       name, cols, rs_ggml_type_name(t->type));
    m->data = t->data;
    m->type = t->type;
    m->rows = rows;
    m->cols = cols;
    m->row_bytes = (size_t)rs_ggml_nbytes(t->type, (uint64_t)cols);
    *bytes += m->row_bytes * (uint64_t)rows;
    return RS_OK;
}

static int bind_vector(const rs_gguf *g, const char *name, int n, const float **out, uint64_t *bytes,
                       ERRBUF) {
    const rs_gguf_tensor *t = rs_gguf_find_tensor(g, name);
    if (!t) return rs_fail(err, err_len, RS_ERR_FORMAT, "model lacks tensor %s", name);
    if (t->type != RS_GGML_F32)
        return rs_fail(err, err_len, RS_ERR_UNSUPPORTED, "tensor %s has type %s; norms must be F32",
                       name, rs_ggml_type_name(t->type));
    if (t->ne[0] != (uint64_t)n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1)
        return rs_fail(err, err_len, RS_ERR_FORMAT, "tensor %s has %llu elements, expected %d",
                       name, (unsigned long long)t->ne[0], n);
    *out = (const float *)t->data;
    *bytes += (uint64_t)n * 4;
    return RS_OK;
}

/* Features we do not implement: refuse rather than compute something wrong. */
static int refuse_unsupported(const rs_gguf *g, const char *arch, ERRBUF) {
    static const char *int_keys[] = {"expert_count", "attention.sliding_window"};
    for (size_t i = 0; i < sizeof int_keys / sizeof *int_keys; i++) {
        char key[128];
        snprintf(key, sizeof key, "%s.%s", arch, int_keys[i]);
        int64_t v;
        if (rs_gguf_get_i64(g, key, &v, NULL, 0) == RS_OK && v > 0)
            return rs_fail(err, err_len, RS_ERR_UNSUPPORTED, "unsupported model feature: %s = %lld",
                           key, (long long)v);
    }
    static const char *tensors[] = {"blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.0.attn_v.bias",
                                    "blk.0.attn_output.bias", "blk.0.attn_q_norm.weight",
                                    "blk.0.attn_k_norm.weight", "blk.0.ffn_gate_inp.weight"};
    for (size_t i = 0; i < sizeof tensors / sizeof *tensors; i++)
        if (rs_gguf_find_tensor(g, tensors[i]))
            return rs_fail(err, err_len, RS_ERR_UNSUPPORTED,
                           "unsupported model feature: tensor %s (biases, QK-norm and experts are not implemented)",
                           tensors[i]);
    return RS_OK;
}

static int read_hparams(rs_model *m, const char *arch, ERRBUF) {
    const rs_gguf *g = &m->gguf;
    rs_hparams *hp = &m->hp;
    int rc;
    if ((rc = req_int(g, arch, "block_count", 1, 1024, &hp->n_layer, err, err_len))) return rc;
    if ((rc = req_int(g, arch, "embedding_length", 1, 1 << 16, &hp->n_embd, err, err_len))) return rc;
    if ((rc = req_int(g, arch, "feed_forward_length", 1, 1 << 20, &hp->n_ff, err, err_len))) return rc;
    if ((rc = req_int(g, arch, "attention.head_count", 1, 1024, &hp->n_head, err, err_len))) return rc;
    hp->n_head_kv = hp->n_head;
    if ((rc = opt_int(g, arch, "attention.head_count_kv", 1, 1024, &hp->n_head_kv, err, err_len))) return rc;
    hp->n_ctx_train = 2048;
    if ((rc = opt_int(g, arch, "context_length", 1, 1 << 24, &hp->n_ctx_train, err, err_len))) return rc;
    if (hp->n_embd % hp->n_head)
        return rs_fail(err, err_len, RS_ERR_FORMAT, "embedding_length %d is not a multiple of head_count %d",
                       hp->n_embd, hp->n_head);
    hp->head_dim = hp->n_embd / hp->n_head;
    if ((rc = opt_int(g, arch, "attention.key_length", 1, 4096, &hp->head_dim, err, err_len))) return rc;
    int32_t vlen = hp->head_dim;
    if ((rc = opt_int(g, arch, "attention.value_length", 1, 4096, &vlen, err, err_len))) return rc;
    if (vlen != hp->head_dim)
        return rs_fail(err, err_len, RS_ERR_UNSUPPORTED,
                       "unsupported model feature: attention.value_length %d != key_length %d", vlen, hp->head_dim);
    if (hp->n_head % hp->n_head_kv)
        return rs_fail(err, err_len, RS_ERR_FORMAT, "head_count %d is not a multiple of head_count_kv %d",
                       hp->n_head, hp->n_head_kv);
    hp->rope_dim = hp->head_dim;
    if ((rc = opt_int(g, arch, "rope.dimension_count", 2, hp->head_dim, &hp->rope_dim, err, err_len))) return rc;
    if (hp->rope_dim % 2)
        return rs_fail(err, err_len, RS_ERR_FORMAT, "rope.dimension_count %d is odd", hp->rope_dim);
    double base = 10000.0, eps = 1e-5;
    if ((rc = opt_float(g, arch, "rope.freq_base", &base, err, err_len))) return rc;
    if ((rc = opt_float(g, arch, "attention.layer_norm_rms_epsilon", &eps, err, err_len))) return rc;
    if (!(base > 0) || !(eps > 0))
        return rs_fail(err, err_len, RS_ERR_FORMAT, "rope.freq_base and layer_norm_rms_epsilon must be > 0");
    hp->rope_freq_base = (float)base;
    hp->rms_eps = (float)eps;
    m->rope_pos_scale = 1.0f;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    const char *st;
    size_t st_len;
    if ((rc = rs_gguf_get_str(g, key, &st, &st_len, err, err_len)) > 0) return rc;
    if (rc == RS_OK && !(st_len == 4 && memcmp(st, "none", 4) == 0)) {
        if (!(st_len == 6 && memcmp(st, "linear", 6) == 0))
            return rs_fail(err, err_len, RS_ERR_UNSUPPORTED, "unsupported rope scaling type '%.*s'",
                           (int)st_len, st);
        double factor = 1.0;
        if ((rc = opt_float(g, arch, "rope.scaling.factor", &factor, err, err_len))) return rc;
        if (!(factor > 0)) return rs_fail(err, err_len, RS_ERR_FORMAT, "rope.scaling.factor must be > 0");
        m->rope_pos_scale = (float)(1.0 / factor);
    }
    const rs_gguf_tensor *te = rs_gguf_find_tensor(g, "token_embd.weight");
    if (!te) return rs_fail(err, err_len, RS_ERR_FORMAT, "model lacks tensor token_embd.weight");
    if (te->ne[1] < 1 || te->ne[1] > (1u << 30))
        return rs_fail(err, err_len, RS_ERR_FORMAT, "token_embd.weight has a bad vocabulary size");
    hp->n_vocab = (int32_t)te->ne[1];
    int64_t fv;
    hp->file_type = rs_gguf_get_i64(g, "general.file_type", &fv, NULL, 0) == RS_OK ? (int32_t)fv : -1;
    return RS_OK;
}

static int bind_weights(rs_model *m, ERRBUF) {
    const rs_gguf *g = &m->gguf;
    const rs_hparams *hp = &m->hp;
    int E = hp->n_embd, Q = hp->n_head * hp->head_dim, KV = hp->n_head_kv * hp->head_dim;
    uint64_t b = 0;
    int rc;
    char name[96];
    if ((rc = bind_matrix(g, "token_embd.weight", hp->n_vocab, E, &m->token_embd, &b, err, err_len))) return rc;
    m->layers = calloc((size_t)hp->n_layer, sizeof(rs_layer));
    if (!m->layers) return rs_fail(err, err_len, RS_ERR_NOMEM, "out of memory");
    for (int l = 0; l < hp->n_layer; l++) {
        rs_layer *L = &m->layers[l];
#define MAT(field, suffix, rows, cols)                                                  \
        snprintf(name, sizeof name, "blk.%d.%s.weight", l, suffix);                     \
        if ((rc = bind_matrix(g, name, rows, cols, &L->field, &b, err, err_len))) return rc;
#define VEC(field, suffix)                                                              \
        snprintf(name, sizeof name, "blk.%d.%s.weight", l, suffix);                     \
        if ((rc = bind_vector(g, name, E, &L->field, &b, err, err_len))) return rc;
        VEC(attn_norm, "attn_norm")
        MAT(wq, "attn_q", Q, E)
        MAT(wk, "attn_k", KV, E)
        MAT(wv, "attn_v", KV, E)
        MAT(wo, "attn_output", E, Q)
        VEC(ffn_norm, "ffn_norm")
        MAT(w_gate, "ffn_gate", hp->n_ff, E)
        MAT(w_up, "ffn_up", hp->n_ff, E)
        MAT(w_down, "ffn_down", E, hp->n_ff)
#undef MAT
#undef VEC
    }
    if ((rc = bind_vector(g, "output_norm.weight", E, &m->output_norm, &b, err, err_len))) return rc;
    if (rs_gguf_find_tensor(g, "output.weight")) {
        if ((rc = bind_matrix(g, "output.weight", hp->n_vocab, E, &m->output, &b, err, err_len))) return rc;
        m->hp.tied_output = 0;
    } else {
        m->output = m->token_embd;
        m->hp.tied_output = 1;
    }
    m->weight_bytes = b;
    return RS_OK;
}

/* inv_freq[i] = base^(-2i/rope_dim) / freq_factor[i] (Llama 3's rope_freqs). */
static int build_rope(rs_model *m, ERRBUF) {
    int half = m->hp.rope_dim / 2;
    m->rope_inv_freq = malloc((size_t)half * sizeof(float));
    if (!m->rope_inv_freq) return rs_fail(err, err_len, RS_ERR_NOMEM, "out of memory");
    const float *factors = NULL;
    const rs_gguf_tensor *rf = rs_gguf_find_tensor(&m->gguf, "rope_freqs.weight");
    if (rf) {
        if (rf->type != RS_GGML_F32 || rf->ne[0] != (uint64_t)half || !rf->data)
            return rs_fail(err, err_len, RS_ERR_FORMAT, "rope_freqs.weight must be F32 with %d elements", half);
        factors = (const float *)rf->data;
    }
    for (int i = 0; i < half; i++) {
        double f = pow((double)m->hp.rope_freq_base, -2.0 * i / m->hp.rope_dim);
        if (factors) f /= factors[i];
        m->rope_inv_freq[i] = (float)f;
    }
    return RS_OK;
}

static int default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > 64 ? 64 : (int)n);
}

int rs_model_open(const char *path, rs_model **out, char *err, size_t err_len) {
    *out = NULL;
    rs_model *m = calloc(1, sizeof(*m));
    if (!m) return rs_fail(err, err_len, RS_ERR_NOMEM, "out of memory");
    int rc = rs_gguf_open(path, &m->gguf, err, err_len);
    if (rc) {
        free(m);
        return rc;
    }
    const char *arch;
    size_t arch_len;
    rc = rs_gguf_get_str(&m->gguf, "general.architecture", &arch, &arch_len, err, err_len);
    if (rc < 0) rc = rs_fail(err, err_len, RS_ERR_FORMAT, "model metadata lacks general.architecture");
    char archz[64] = "";
    if (!rc) {
        if (arch_len >= sizeof archz || !(arch_len == 5 && memcmp(arch, "llama", 5) == 0))
            rc = rs_fail(err, err_len, RS_ERR_UNSUPPORTED,
                         "unsupported architecture '%.*s' (supported: llama)", (int)(arch_len > 60 ? 60 : arch_len), arch);
        else
            memcpy(archz, arch, arch_len);
    }
    if (!rc) rc = refuse_unsupported(&m->gguf, archz, err, err_len);
    if (!rc) rc = read_hparams(m, archz, err, err_len);
    if (!rc) rc = bind_weights(m, err, err_len);
    if (!rc) rc = build_rope(m, err, err_len);
    if (!rc) {
        m->kern = rs_kernels_select(err, err_len);
        if (!m->kern) rc = RS_ERR_UNSUPPORTED;
    }
    if (!rc && rs_pool_create(default_threads(), &m->pool) != RS_OK)
        rc = rs_fail(err, err_len, RS_ERR_NOMEM, "cannot start the thread pool");
    if (rc) {
        rs_model_free(m);
        return rc;
    }
    *out = m;
    return RS_OK;
}

void rs_model_free(rs_model *m) {
    if (!m) return;
    rs_pool_free(m->pool);
    free(m->layers);
    free(m->rope_inv_freq);
    rs_gguf_close(&m->gguf);
    free(m);
}

void rs_model_hparams(const rs_model *m, rs_hparams *out) { *out = m->hp; }
const char *rs_model_kernels(const rs_model *m) { return m->kern->name; }
int rs_model_threads(const rs_model *m) { return rs_pool_size(m->pool); }
uint64_t rs_model_weight_bytes(const rs_model *m) { return m->weight_bytes; }

int rs_model_set_threads(rs_model *m, int n, char *err, size_t err_len) {
    if (n < 1 || n > 256) return rs_fail(err, err_len, RS_ERR_ARG, "threads must be in 1..256, got %d", n);
    if (n == rs_pool_size(m->pool)) return RS_OK;
    rs_pool *p;
    if (rs_pool_create(n, &p) != RS_OK) return rs_fail(err, err_len, RS_ERR_NOMEM, "cannot start %d threads", n);
    rs_pool_free(m->pool);
    m->pool = p;
    return RS_OK;
}

void rs_matrix_row_f32(const rs_matrix *m, int r, float *out) {
    const uint8_t *row = m->data + (size_t)r * m->row_bytes;
    int n = m->cols;
    switch (m->type) {
    case RS_GGML_F32: memcpy(out, row, (size_t)n * 4); break;
    case RS_GGML_F16:
        for (int i = 0; i < n; i++) { uint16_t h; memcpy(&h, row + 2 * i, 2); out[i] = rs_f16_to_f32(h); }
        break;
    case RS_GGML_BF16:
        for (int i = 0; i < n; i++) { uint16_t h; memcpy(&h, row + 2 * i, 2); out[i] = rs_bf16_to_f32(h); }
        break;
    case RS_GGML_Q8_0:
        for (int b = 0; b < n / 32; b++) {
            const rs_block_q8_0 *blk = (const rs_block_q8_0 *)row + b;
            float d = rs_f16_to_f32(blk->d);
            for (int j = 0; j < 32; j++) out[b * 32 + j] = d * blk->qs[j];
        }
        break;
    case RS_GGML_Q4_0:
        for (int b = 0; b < n / 32; b++) {
            const rs_block_q4_0 *blk = (const rs_block_q4_0 *)row + b;
            float d = rs_f16_to_f32(blk->d);
            for (int j = 0; j < 16; j++) {
                out[b * 32 + j] = d * ((blk->qs[j] & 15) - 8);
                out[b * 32 + j + 16] = d * ((blk->qs[j] >> 4) - 8);
            }
        }
        break;
    case RS_GGML_Q4_1:
        for (int b = 0; b < n / 32; b++) {
            const rs_block_q4_1 *blk = (const rs_block_q4_1 *)row + b;
            float d = rs_f16_to_f32(blk->d), mn = rs_f16_to_f32(blk->m);
            for (int j = 0; j < 16; j++) {
                out[b * 32 + j] = d * (blk->qs[j] & 15) + mn;
                out[b * 32 + j + 16] = d * (blk->qs[j] >> 4) + mn;
            }
        }
        break;
    default: memset(out, 0, (size_t)n * 4); break;
    }
}

/* ---- metadata accessors for the binding ---- */
int rs_meta_count(const rs_model *m) { return (int)m->gguf.n_kv; }
const char *rs_meta_key(const rs_model *m, int i, size_t *len) {
    *len = m->gguf.kv[i].key_len;
    return m->gguf.kv[i].key;
}
int rs_meta_find(const rs_model *m, const char *key) { return rs_gguf_find_kv(&m->gguf, key); }
int rs_meta_type(const rs_model *m, int i) { return m->gguf.kv[i].type; }
int rs_meta_array_type(const rs_model *m, int i) { return m->gguf.kv[i].arr_type; }
uint64_t rs_meta_array_len(const rs_model *m, int i) { return m->gguf.kv[i].arr_len; }
int64_t rs_meta_int(const rs_model *m, int i, uint64_t j) { return rs_gguf_kv_int(&m->gguf.kv[i], j); }
double rs_meta_float(const rs_model *m, int i, uint64_t j) { return rs_gguf_kv_float(&m->gguf.kv[i], j); }
const char *rs_meta_str(const rs_model *m, int i, uint64_t j, size_t *len) {
    return rs_gguf_kv_str(&m->gguf.kv[i], j, len);
}
const void *rs_meta_array_data(const rs_model *m, int i) { return m->gguf.kv[i].value; }
