/* The batched forward pass: many sequences, each with its new tokens, its
 * start position and its page table, in one call.
 *
 * Rows of every activation buffer are the batch's new tokens in order
 * (T of them); a token t belongs to sequence tok_seq[t] at position tok_pos[t].
 * Per layer:
 *   h = rmsnorm(x) * attn_norm
 *   q, k, v = h Wq^T, h Wk^T, h Wv^T ; rope(q, k) at each token's position
 *   K/V of every token -> its page slot   (all of them, before any attention,
 *                                          so a chunk attends to itself from
 *                                          the pages, exactly as a later call)
 *   a = attention(q over the sequence's pages 0..pos) ; x += a Wo^T
 *                                         (attention.c: by chunks of positions,
 *                                          merged in chunk order)
 *   h = rmsnorm(x) * ffn_norm ; x += (silu(h Wg^T) * h Wu^T) Wd^T
 * then logits = rmsnorm(x[selected rows]) * output_norm Wout^T.
 *
 * Determinism: every output element is computed in a fixed order that
 * depends only on that token's own inputs (kernels.h contract; attention's
 * chunks are fixed by position), so batch composition, chunking and thread
 * count never change a result. */
#include "errors.h"
#include "forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


/* ---- parallel GEMM over row blocks ----
 * One pool run can cover up to three matrices that read the same input
 * (q/k/v, gate/up): fewer hand-offs per layer, and one thread's idle tail
 * on a small matrix is filled by rows of the next. Rows go to tasks in
 * whole tiles of 16; a task computes its rows for every token. */

enum { MAX_PARTS = 3 };

typedef struct gemm_part {
    const rs_matrix *w;
    const void *x;          /* rs_block_q16 rows or float rows */
    float *y;
    size_t ldy;
    int rows_per_task;
    int first_task;
    rs_gemm_q_fn qfn;
    rs_gemm_f_fn ffn;
} gemm_part;

typedef struct gemm_job {
    gemm_part parts[MAX_PARTS];
    int n_parts;
    int n_tasks;
    int nt;
} gemm_job;

static void gemm_task(void *ctx, int task, int thread) {
    (void)thread;
    gemm_job *j = ctx;
    int i = j->n_parts - 1;
    while (task < j->parts[i].first_task) i--;
    const gemm_part *p = &j->parts[i];
    int r0 = (task - p->first_task) * p->rows_per_task;
    int nr = p->w->rows - r0 < p->rows_per_task ? p->w->rows - r0 : p->rows_per_task;
    const uint8_t *w = p->w->data + (size_t)r0 * p->w->row_bytes;
    if (p->qfn)
        p->qfn(nr, j->nt, p->w->cols, w, p->w->row_bytes, p->x, p->y + r0, p->ldy);
    else
        p->ffn(nr, j->nt, p->w->cols, w, p->w->row_bytes, p->x, p->y + r0, p->ldy);
}

static int is_quantized(int type) {
    return type == RS_GGML_Q4_0 || type == RS_GGML_Q4_1 || type == RS_GGML_Q8_0;
}

/* ---- per-token steps (norms, rope, activation quantizing, SiLU):
 * each token's row alone, so they run over the pool from PAR_MIN_TOKENS
 * tokens (a serial fifth of a 512-token prefill before; 8 decode streams
 * +5 % against a threshold of 16, A/B x5) and inline below, where a
 * hand-off would cost more than the work ---- */

enum { PAR_MIN_TOKENS = 8 };

typedef void (*tok_fn)(fwd *f, int t, const void *arg);

typedef struct tok_job {
    fwd *f;
    tok_fn fn;
    const void *arg;
    int nt, per;
} tok_job;

static void tok_task(void *ctx, int task, int thread) {
    (void)thread;
    const tok_job *j = ctx;
    int t1 = (task + 1) * j->per < j->nt ? (task + 1) * j->per : j->nt;
    for (int t = task * j->per; t < t1; t++) j->fn(j->f, t, j->arg);
}

/* fn(f, t, arg) for every t < nt */
static void for_tokens(fwd *f, int nt, tok_fn fn, const void *arg) {
    int threads = rs_pool_size(f->m->pool);
    if (nt < PAR_MIN_TOKENS || threads == 1) {
        for (int t = 0; t < nt; t++) fn(f, t, arg);
        return;
    }
    int n = 4 * threads;
    tok_job j = {f, fn, arg, nt, (nt + n - 1) / n};
    rs_pool_run(f->m->pool, (nt + j.per - 1) / j.per, tok_task, &j);
}

typedef struct quant_arg {
    const float *in;
    int cols;
} quant_arg;

/* token t's row (cols floats) into its place in f->xq */
static void quantize_row(fwd *f, int t, const float *row, int cols) {
    f->K->quantize_q16(row, f->xq + (size_t)t * (size_t)(cols / RS_QK), cols);
}

static void quantize_tok(fwd *f, int t, const void *arg) {
    const quant_arg *a = arg;
    quantize_row(f, t, a->in + (size_t)t * a->cols, a->cols);
}

/* The input a matrix of this type multiplies: quantized rows for integer
 * kernels (quantized once into f->xq, reused by every matrix sharing the
 * input, or already there: a per-token step that wrote `in` quantized it in
 * the same pass, see xq_src), the floats themselves otherwise. */
static const void *prepare_input(fwd *f, const float *in, int nt, int cols, int type) {
    if (!is_quantized(type)) return in;
    if (f->xq_src == in && f->xq_cols == cols && f->xq_nt == nt) return f->xq;
    quant_arg a = {in, cols};
    for_tokens(f, nt, quantize_tok, &a);
    f->xq_src = in, f->xq_cols = cols, f->xq_nt = nt;
    return f->xq;
}

/* After a per-token step wrote `out` (cols wide) for every batch token,
 * quantizing each row as it went when `quant`: what xq holds now. */
static void wrote(fwd *f, const float *out, int cols, int quant) {
    f->xq_src = quant ? out : NULL;
    f->xq_cols = cols, f->xq_nt = f->T;
}

static void job_add(fwd *f, gemm_job *j, const rs_matrix *w, const void *x, float *y, size_t ldy) {
    gemm_part *p = &j->parts[j->n_parts++];
    memset(p, 0, sizeof *p);
    p->w = w;
    p->x = x;
    p->y = y;
    p->ldy = ldy;
    switch (w->type) {
    case RS_GGML_Q4_0: p->qfn = f->K->gemm_q4_0; break;
    case RS_GGML_Q4_1: p->qfn = f->K->gemm_q4_1; break;
    case RS_GGML_Q8_0: p->qfn = f->K->gemm_q8_0; break;
    case RS_GGML_F16: p->ffn = f->K->gemm_f16; break;
    case RS_GGML_BF16: p->ffn = f->K->gemm_bf16; break;
    default: p->ffn = f->K->gemm_f32; break;
    }
    int threads = rs_pool_size(f->m->pool);
    /* several tasks per thread to balance; whole tiles of 16 rows each */
    int per = (w->rows + 8 * threads - 1) / (8 * threads);
    p->rows_per_task = (per + 15) / 16 * 16;
    p->first_task = j->n_tasks;
    j->n_tasks += (w->rows + p->rows_per_task - 1) / p->rows_per_task;
}

/* y_i[t*ldy_i + r] = W_i row r . input row t, for every matrix i (1 to 3)
 * that multiplies the same float input `in` (nt rows of w[0]->cols). */
static void gemm_shared(fwd *f, int n, const rs_matrix *const *w, const float *in, int nt,
                        float *const *y) {
    gemm_job j;
    j.n_parts = 0;
    j.n_tasks = 0;
    j.nt = nt;
    int fused = 1;
    for (int i = 1; i < n; i++) fused &= w[i]->type == w[0]->type;
    if (!fused) { /* different types need different inputs: one run each */
        for (int i = 0; i < n; i++) gemm_shared(f, 1, &w[i], in, nt, &y[i]);
        return;
    }
    const void *x = prepare_input(f, in, nt, w[0]->cols, w[0]->type);
    for (int i = 0; i < n; i++) job_add(f, &j, w[i], x, y[i], (size_t)w[i]->rows);
    rs_pool_run(f->m->pool, j.n_tasks, gemm_task, &j);
}

static void gemm_f(fwd *f, const rs_matrix *w, const float *in, int nt, float *y) {
    gemm_shared(f, 1, &w, in, nt, &y);
}

/* ---- elementwise pieces (cheap next to the matmuls; fixed order) ---- */

static void rmsnorm(const float *x, const float *w, float *out, int n, float eps) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

/* Rotate adjacent pairs (llama.cpp's "normal" rope; the GGUF converter
 * permuted Q/K rows so this matches the original model). */
static void rope(float *v, int n_heads, int hd, int rope_dim, const float *c, const float *s) {
    for (int h = 0; h < n_heads; h++) {
        float *p = v + (size_t)h * hd;
        for (int i = 0; i < rope_dim / 2; i++) {
            float a = p[2 * i], b = p[2 * i + 1];
            p[2 * i] = a * c[i] - b * s[i];
            p[2 * i + 1] = a * s[i] + b * c[i];
        }
    }
}

static void build_rope_tables(fwd *f) {
    int half = f->m->hp.rope_dim / 2;
    for (int t = 0; t < f->T; t++) {
        double pos = (double)f->tok_pos[t] * f->m->rope_pos_scale;
        for (int i = 0; i < half; i++) {
            double a = pos * (double)f->m->rope_inv_freq[i];
            f->rope_cos[(size_t)t * half + i] = (float)cos(a);
            f->rope_sin[(size_t)t * half + i] = (float)sin(a);
        }
    }
}

/* ---- rope and K/V writes (attention itself: attention.c) ---- */

/* rope on token t's q and k, then its K/V into its page slot (layer *arg) */
static void rope_write_kv(fwd *f, int t, const void *arg) {
    const rs_hparams *hp = &f->m->hp;
    int layer = *(const int *)arg, half = hp->rope_dim / 2;
    const float *c = f->rope_cos + (size_t)t * half, *sn = f->rope_sin + (size_t)t * half;
    rope(f->q + (size_t)t * hp->n_head * hp->head_dim, hp->n_head, hp->head_dim, hp->rope_dim, c, sn);
    rope(f->k + (size_t)t * hp->n_head_kv * hp->head_dim, hp->n_head_kv, hp->head_dim, hp->rope_dim, c, sn);
    rs_kv *kv = f->kv;
    int kvd = kv->kvd, ps = kv->page_size;
    const rs_seq *s = &f->seqs[f->tok_seq[t]];
    int pos = f->tok_pos[t];
    int32_t page = f->pages[s->page_offset + pos / ps];
    size_t off = (size_t)(pos % ps) * kvd * kv->elem_size;
    uint8_t *kd = rs_kv_ptr(kv, page, layer, 0) + off;
    uint8_t *vd = rs_kv_ptr(kv, page, layer, 1) + off;
    if (kv->dtype == RS_KV_F16) {
        f->K->f32_to_f16(f->k + (size_t)t * kvd, (uint16_t *)kd, kvd);
        f->K->f32_to_f16(f->v + (size_t)t * kvd, (uint16_t *)vd, kvd);
    } else {
        memcpy(kd, f->k + (size_t)t * kvd, (size_t)kvd * 4);
        memcpy(vd, f->v + (size_t)t * kvd, (size_t)kvd * 4);
    }
}

typedef struct norm_arg {
    const float *norm;  /* weights */
    const float *add;   /* added to x first (the sublayer's output), or NULL */
    int quant;          /* quantize h_t too: the next matrices take integer input */
} norm_arg;

/* x_t += add_t (a residual), then h_t = rmsnorm(x_t) * norm (and its
 * quantized row, in the same pass: one pool run less) */
static void residual_norm(fwd *f, int t, const void *arg) {
    const norm_arg *a = arg;
    int E = f->m->hp.n_embd;
    float *x = f->x + (size_t)t * E, *h = f->h + (size_t)t * E;
    if (a->add)
        for (int i = 0; i < E; i++) x[i] += a->add[(size_t)t * E + i];
    rmsnorm(x, a->norm, h, E, f->m->hp.rms_eps);
    if (a->quant) quantize_row(f, t, h, E);
}

/* g_t = silu(g_t) * u_t (and, *arg set, its quantized row) */
static void swiglu(fwd *f, int t, const void *arg) {
    size_t F = (size_t)f->m->hp.n_ff;
    float *g = f->g + (size_t)t * F;
    f->K->swiglu(g, f->u + (size_t)t * F, (int)F);
    if (*(const int *)arg) quantize_row(f, t, g, (int)F);
}

/* x_t += tmp_t */
static void residual(fwd *f, int t, const void *arg) {
    (void)arg;
    int E = f->m->hp.n_embd;
    for (int i = 0; i < E; i++) f->x[(size_t)t * E + i] += f->tmp[(size_t)t * E + i];
}

/* ---- one layer, the whole pass ---- */

static void layer_forward(fwd *f, int l) {
    const rs_layer *L = &f->m->layers[l];
    int T = f->T, E = f->m->hp.n_embd, F = f->m->hp.n_ff;
    /* the previous layer's FFN residual is added here, with this norm */
    norm_arg attn_in = {L->attn_norm, l > 0 ? f->tmp : NULL, is_quantized(L->wq.type)};
    for_tokens(f, T, residual_norm, &attn_in);
    wrote(f, f->h, E, attn_in.quant);
    const rs_matrix *qkv[3] = {&L->wq, &L->wk, &L->wv};
    float *qkv_out[3] = {f->q, f->k, f->v};
    gemm_shared(f, 3, qkv, f->h, T, qkv_out);
    for_tokens(f, T, rope_write_kv, &l);
    rs_attention(f, l);
    wrote(f, f->h, 0, 0);
    gemm_f(f, &L->wo, f->h, T, f->tmp);
    norm_arg ffn_in = {L->ffn_norm, f->tmp, is_quantized(L->w_gate.type)};
    for_tokens(f, T, residual_norm, &ffn_in);
    wrote(f, f->h, E, ffn_in.quant);
    const rs_matrix *gate_up[2] = {&L->w_gate, &L->w_up};
    float *gate_up_out[2] = {f->g, f->u};
    gemm_shared(f, 2, gate_up, f->h, T, gate_up_out);
    int down_q = is_quantized(L->w_down.type);
    for_tokens(f, T, swiglu, &down_q);
    wrote(f, f->g, F, down_q);
    /* The FFN output stays in tmp: the next layer's first step adds it to x
     * (fused with its norm), rs_forward after the last layer. Between
     * layers x lacks it, and tmp must be left alone. */
    gemm_f(f, &L->w_down, f->g, T, f->tmp);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Every batch token writes its K/V into its own slot (page, position in
 * page): two writing one slot would race (tokens run in parallel) and leave
 * one of them attending to the other's K/V. A caller bug, refused. */
static int distinct_slots(const rs_kv *kv, int32_t n_tokens, const rs_seq *seqs, int32_t n_seqs,
                          const int32_t *pages, char *err, size_t err_len) {
    int64_t *slot = malloc((size_t)n_tokens * sizeof(int64_t));
    if (!slot) return rs_fail(err, err_len, RS_ERR_NOMEM, "out of memory for a batch of %d tokens", n_tokens);
    int32_t n = 0, ps = kv->page_size;
    for (int32_t s = 0; s < n_seqs; s++)
        for (int32_t i = 0; i < seqs[s].n_tokens; i++) {
            int32_t pos = seqs[s].start_pos + i;
            slot[n++] = (int64_t)pages[seqs[s].page_offset + pos / ps] * ps + pos % ps;
        }
    qsort(slot, (size_t)n, sizeof *slot, cmp_i64);
    int64_t dup = -1;
    for (int32_t i = 1; i < n && dup < 0; i++)
        if (slot[i] == slot[i - 1]) dup = slot[i];
    free(slot);
    if (dup >= 0)
        return rs_fail(err, err_len, RS_ERR_ARG, "two batch tokens write the same KV slot (page %lld, slot %lld)",
                       (long long)(dup / ps), (long long)(dup % ps));
    return RS_OK;
}

static int validate(const rs_model *m, const rs_kv *kv, const int32_t *tokens, int32_t n_tokens,
                    const rs_seq *seqs, int32_t n_seqs, const int32_t *pages, int32_t n_pages_total,
                    char *err, size_t err_len) {
    const rs_hparams *hp = &m->hp;
    if (kv->n_layer != hp->n_layer || kv->kvd != hp->n_head_kv * hp->head_dim)
        return rs_fail(err, err_len, RS_ERR_ARG, "the KV store was made for another model geometry");
    if (n_seqs < 1 || n_tokens < 1)
        return rs_fail(err, err_len, RS_ERR_ARG, "empty batch (%d sequences, %d tokens)", n_seqs, n_tokens);
    for (int32_t i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= hp->n_vocab)
            return rs_fail(err, err_len, RS_ERR_ARG, "token id %d at batch index %d is outside the vocabulary [0, %d)",
                           tokens[i], i, hp->n_vocab);
    int64_t covered = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        const rs_seq *q = &seqs[s];
        if (q->n_tokens < 1 || q->tok_offset < 0 || (int64_t)q->tok_offset + q->n_tokens > n_tokens)
            return rs_fail(err, err_len, RS_ERR_ARG, "sequence %d: tokens [%d, +%d) are not inside the %d batch tokens",
                           s, q->tok_offset, q->n_tokens, n_tokens);
        if (q->tok_offset != covered)
            return rs_fail(err, err_len, RS_ERR_ARG, "sequence %d: tokens must follow the previous sequence's (offset %lld)",
                           s, (long long)covered);
        covered += q->n_tokens;
        int64_t end = (int64_t)q->start_pos + q->n_tokens;
        if (q->start_pos < 0 || end > hp->n_ctx_train)
            return rs_fail(err, err_len, RS_ERR_ARG,
                           "sequence %d: positions [%d, %lld) exceed the context length %d",
                           s, q->start_pos, (long long)end, hp->n_ctx_train);
        int64_t need = (end + kv->page_size - 1) / kv->page_size;
        if (q->n_pages < need || q->page_offset < 0 || (int64_t)q->page_offset + q->n_pages > n_pages_total)
            return rs_fail(err, err_len, RS_ERR_ARG,
                           "sequence %d: page table [%d, +%d) must lie in the %d pages given and cover %lld pages",
                           s, q->page_offset, q->n_pages, n_pages_total, (long long)need);
        for (int64_t i = 0; i < need; i++) {
            int32_t p = pages[q->page_offset + i];
            if (p < 0 || p >= kv->n_pages)
                return rs_fail(err, err_len, RS_ERR_ARG, "sequence %d: page id %d is outside the pool [0, %d)",
                               s, p, kv->n_pages);
        }
    }
    if (covered != n_tokens)
        return rs_fail(err, err_len, RS_ERR_ARG, "sequences cover %lld of the %d batch tokens",
                       (long long)covered, n_tokens);
    return distinct_slots(kv, n_tokens, seqs, n_seqs, pages, err, err_len);
}

static void fwd_free(fwd *f) {
    free(f->tok_seq); free(f->tok_pos); free(f->x); free(f->h); free(f->q); free(f->k);
    free(f->v); free(f->g); free(f->u); free(f->tmp); free(f->xq); free(f->rope_cos);
    free(f->rope_sin); rs_attn_free(f);
}

static int fwd_alloc(fwd *f, const rs_seq *seqs, int n_seqs) {
    const rs_hparams *hp = &f->m->hp;
    size_t T = (size_t)f->T, E = (size_t)hp->n_embd, F = (size_t)hp->n_ff;
    size_t Q = (size_t)hp->n_head * hp->head_dim, KVD = (size_t)hp->n_head_kv * hp->head_dim;
    size_t wide = E > Q ? E : Q, qw = wide > F ? wide : F;
    f->max_ctx = 0;
    for (int s = 0; s < n_seqs; s++)
        if (seqs[s].start_pos + seqs[s].n_tokens > f->max_ctx) f->max_ctx = seqs[s].start_pos + seqs[s].n_tokens;
    f->max_ctx = (f->max_ctx + f->kv->page_size - 1) / f->kv->page_size * f->kv->page_size;
    f->tok_seq = malloc(T * sizeof(int32_t));
    f->tok_pos = malloc(T * sizeof(int32_t));
    f->x = malloc(T * E * sizeof(float));
    f->h = malloc(T * wide * sizeof(float));
    f->q = malloc(T * Q * sizeof(float));
    f->k = malloc(T * KVD * sizeof(float));
    f->v = malloc(T * KVD * sizeof(float));
    f->g = malloc(T * F * sizeof(float));
    f->u = malloc(T * F * sizeof(float));
    f->tmp = malloc(T * E * sizeof(float));
    f->xq = malloc(T * (qw / RS_QK + 1) * sizeof(rs_block_q16));
    f->rope_cos = malloc(T * (size_t)(hp->rope_dim / 2 + 1) * sizeof(float));
    f->rope_sin = malloc(T * (size_t)(hp->rope_dim / 2 + 1) * sizeof(float));
    return f->tok_seq && f->tok_pos && f->x && f->h && f->q && f->k && f->v && f->g && f->u &&
           f->tmp && f->xq && f->rope_cos && f->rope_sin && rs_attn_alloc(f);
}

int rs_forward(rs_model *m, rs_kv *kv, const int32_t *tokens, int32_t n_tokens, const rs_seq *seqs,
               int32_t n_seqs, const int32_t *pages, int32_t n_pages_total, int all_logits,
               float *logits, char *err, size_t err_len) {
    int rc = validate(m, kv, tokens, n_tokens, seqs, n_seqs, pages, n_pages_total, err, err_len);
    if (rc) return rc;
    const rs_hparams *hp = &m->hp;
    fwd f;
    memset(&f, 0, sizeof f);
    f.m = m;
    f.kv = kv;
    f.K = m->kern;
    f.T = n_tokens;
    f.seqs = seqs;
    f.pages = pages;
    if (!fwd_alloc(&f, seqs, n_seqs)) {
        fwd_free(&f);
        return rs_fail(err, err_len, RS_ERR_NOMEM, "out of memory for a batch of %d tokens", n_tokens);
    }
    int E = hp->n_embd;
    for (int s = 0; s < n_seqs; s++)
        for (int i = 0; i < seqs[s].n_tokens; i++) {
            int t = seqs[s].tok_offset + i;
            f.tok_seq[t] = s;
            f.tok_pos[t] = seqs[s].start_pos + i;
            rs_matrix_row_f32(&m->token_embd, tokens[t], f.x + (size_t)t * E);
        }
    build_rope_tables(&f);
    for (int l = 0; l < hp->n_layer; l++) layer_forward(&f, l);
    for_tokens(&f, n_tokens, residual, NULL); /* the last layer's FFN output */

    /* logits of the selected rows, written straight into the caller's buffer */
    int n_out = 0;
    for (int t = 0; t < n_tokens; t++) {
        const rs_seq *s = &seqs[f.tok_seq[t]];
        int last = t == s->tok_offset + s->n_tokens - 1;
        if (all_logits || (last && s->want_logits))
            rmsnorm(f.x + (size_t)t * E, m->output_norm, f.tmp + (size_t)n_out++ * E, E, hp->rms_eps);
    }
    if (n_out) gemm_f(&f, &m->output, f.tmp, n_out, logits);
    fwd_free(&f);
    return RS_OK;
}
