/* The forward pass's state for one batch, shared by forward.c (the layers)
 * and attention.c (attention over the paged KV store). Internal to the
 * engine. */
#ifndef RS_FORWARD_H
#define RS_FORWARD_H

#include "kv.h"
#include "model.h"

typedef struct fwd {
    rs_model *m;
    rs_kv *kv;
    const rs_kernels *K;
    int T;
    const rs_seq *seqs;
    const int32_t *pages;
    int32_t *tok_seq;       /* [T] */
    int32_t *tok_pos;       /* [T] */
    float *x;               /* [T][E] residual stream */
    float *h;               /* [T][max(E, Q)] normed input / attention output */
    float *q;               /* [T][Q] */
    float *k, *v;           /* [T][KVD] */
    float *g, *u;           /* [T][F] */
    float *tmp;             /* [T][E] */
    rs_block_q16 *xq;        /* [T][max(E, Q, F)/32] quantized activations */
    const float *xq_src;    /* the float rows xq holds now (NULL: none): xq_nt rows of xq_cols */
    int xq_cols, xq_nt;
    float *rope_cos, *rope_sin; /* [T][rope_dim/2] */
    int max_ctx;            /* the longest sequence after this batch, in positions */
    float *scores;          /* attention.c: per thread, one chunk's score rows of a task */
    float *part;            /* attention.c: chunk partials of a wave of tokens */
    int attn_wave;          /* attention.c: batch tokens per wave */
    int attn_cl;            /* attention.c: positions per score row (a chunk, or less) */
} fwd;

/* attention.c: a = softmax(q k^T / sqrt(hd)) v for every token and head of
 * the batch over its sequence's pages 0..pos (K/V of this layer already
 * written), into f->h; rs_attn_alloc sizes its buffers once per batch
 * (after max_ctx is set), returning 0 when out of memory. */
int rs_attn_alloc(fwd *f);
void rs_attn_free(fwd *f);
void rs_attention(fwd *f, int layer);

#endif
