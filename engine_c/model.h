/* The model: hyperparameters and weight views into the mapped GGUF.
 *
 *   token_embd   [n_vocab][n_embd]          (any supported type; rows dequantized on lookup)
 *   per layer:   attn_norm [n_embd] f32
 *                wq [n_head*hd][n_embd]  wk, wv [n_head_kv*hd][n_embd]  wo [n_embd][n_head*hd]
 *                ffn_norm [n_embd] f32
 *                w_gate, w_up [n_ff][n_embd]   w_down [n_embd][n_ff]
 *   output_norm  [n_embd] f32
 *   output       [n_vocab][n_embd]          (token_embd when tied)
 * Matrices are row-major by output feature: row r is ne[0] elements of the
 * tensor's type, r*row_bytes into the data. */
#ifndef RS_MODEL_H
#define RS_MODEL_H

#include "gguf.h"
#include "kernels.h"
#include "rs_engine.h"
#include "threadpool.h"

typedef struct rs_matrix {
    const uint8_t *data;
    int type;      /* ggml type */
    int rows;      /* output features */
    int cols;      /* input features (ne[0]) */
    size_t row_bytes;
} rs_matrix;

typedef struct rs_layer {
    const float *attn_norm;
    rs_matrix wq, wk, wv, wo;
    const float *ffn_norm;
    rs_matrix w_gate, w_up, w_down;
} rs_layer;

struct rs_model {
    rs_gguf gguf;
    rs_hparams hp;
    rs_matrix token_embd;
    rs_layer *layers;
    const float *output_norm;
    rs_matrix output;
    float *rope_inv_freq;     /* [rope_dim/2] theta_i = pos * inv_freq[i] */
    float rope_pos_scale;     /* linear rope scaling: positions multiplied by this */
    const rs_kernels *kern;
    rs_pool *pool;
    uint64_t weight_bytes;
};

/* Dequantize row r of a matrix into out[cols] (embedding lookup). */
void rs_matrix_row_f32(const rs_matrix *m, int r, float *out);

#endif
