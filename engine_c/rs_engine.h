/* radixserve engine: the public C API.
 *
 * This header is read by cffi (engine_c/build_engine.py), so it holds only
 * plain declarations: no macros with expressions, no inline functions.
 *
 * Conventions:
 * - Every entry point that can fail returns an int status (0 = ok) and writes
 *   a NUL-terminated message into the caller's err buffer (err_len bytes).
 *   Nothing here aborts, exits or prints.
 * - The engine stores KV data; the caller owns page accounting (which page
 *   ids are free). Page ids are checked against the pool size.
 * - A forward call is deterministic by construction: each output element is
 *   computed by one thread in a fixed reduction order that depends on neither
 *   the batch composition, the chunking of a prompt nor the thread count.
 */
#ifndef RS_ENGINE_H
#define RS_ENGINE_H

#include <stddef.h>
#include <stdint.h>

enum rs_status {
    RS_OK = 0,
    RS_ERR_IO = 1,          /* cannot open / map / read a file */
    RS_ERR_FORMAT = 2,      /* not a GGUF, truncated, corrupt */
    RS_ERR_UNSUPPORTED = 3, /* architecture, tensor type or feature we refuse */
    RS_ERR_ARG = 4,         /* a bad argument: token id, page id, position... */
    RS_ERR_NOMEM = 5        /* allocation failed */
};

enum rs_kv_dtype { RS_KV_F16 = 0, RS_KV_F32 = 1 };

/* Model hyperparameters, all read from the GGUF. */
typedef struct rs_hparams {
    int32_t n_vocab;
    int32_t n_ctx_train;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;
    int32_t n_ff;
    int32_t rope_dim;
    float rope_freq_base;
    float rms_eps;
    int32_t tied_output;     /* 1 when the output matrix is token_embd */
    int32_t file_type;       /* general.file_type, -1 when absent */
} rs_hparams;

typedef struct rs_model rs_model;
typedef struct rs_kv rs_kv;

/* One sequence of a batch: its new tokens are tokens[tok_offset .. +n_tokens)
 * (sequences take consecutive runs of the batch's tokens, in order),
 * placed at positions start_pos .. start_pos+n_tokens-1; its page table is
 * pages[page_offset .. +n_pages) and must cover every position up to the last
 * new one (ceil((start_pos+n_tokens)/page_size) pages at least). */
typedef struct rs_seq {
    int32_t tok_offset;
    int32_t n_tokens;
    int32_t start_pos;
    int32_t page_offset;
    int32_t n_pages;
    int32_t want_logits;  /* 1: a logits row for its last new token; 0: none (a prefill chunk) */
} rs_seq;

/* ---- model ---- */
int rs_model_open(const char *path, rs_model **out, char *err, size_t err_len);
void rs_model_free(rs_model *m);
void rs_model_hparams(const rs_model *m, rs_hparams *out);
/* Name of the live kernel set ("avx2", "neon", "scalar"). */
const char *rs_model_kernels(const rs_model *m);
/* Thread pool size used by rs_forward (>= 1). */
int rs_model_set_threads(rs_model *m, int n_threads, char *err, size_t err_len);
int rs_model_threads(const rs_model *m);
/* Bytes of weight data the model maps (all tensors). */
uint64_t rs_model_weight_bytes(const rs_model *m);

/* ---- GGUF metadata, read-only views into the mapped file ----
 * Types follow GGUF: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool,
 * 8 string, 9 array, 10 u64, 11 i64, 12 f64. */
int rs_meta_count(const rs_model *m);
const char *rs_meta_key(const rs_model *m, int i, size_t *key_len);
int rs_meta_find(const rs_model *m, const char *key);   /* index or -1 */
int rs_meta_type(const rs_model *m, int i);
int rs_meta_array_type(const rs_model *m, int i);      /* element type, -1 if not an array */
uint64_t rs_meta_array_len(const rs_model *m, int i);
/* Scalars (and elements of numeric arrays, j = element index; j ignored for scalars). */
int64_t rs_meta_int(const rs_model *m, int i, uint64_t j);
double rs_meta_float(const rs_model *m, int i, uint64_t j);
/* Strings (and elements of string arrays): pointer into the map, not NUL-terminated. */
const char *rs_meta_str(const rs_model *m, int i, uint64_t j, size_t *len);
/* Numeric arrays: pointer to the raw little-endian elements in the map. */
const void *rs_meta_array_data(const rs_model *m, int i);

/* ---- KV page store ---- */
/* Bytes one page occupies (all layers, K and V). */
uint64_t rs_kv_page_bytes(const rs_model *m, int page_size, int dtype);
int rs_kv_create(const rs_model *m, int n_pages, int page_size, int dtype,
                 rs_kv **out, char *err, size_t err_len);
void rs_kv_free(rs_kv *kv);
int rs_kv_n_pages(const rs_kv *kv);
int rs_kv_page_size(const rs_kv *kv);
int rs_kv_dtype(const rs_kv *kv);
/* Copy page src to page dst (copy-on-write of a partial page). */
int rs_kv_copy_page(rs_kv *kv, int32_t src, int32_t dst, char *err, size_t err_len);
/* Raw access to one page's bytes (snapshots, tests). */
int rs_kv_read_page(const rs_kv *kv, int32_t page, void *dst, char *err, size_t err_len);
int rs_kv_write_page(rs_kv *kv, int32_t page, const void *src, char *err, size_t err_len);

/* ---- the batched forward ----
 * Runs n_seqs sequences in one pass. Writes K/V of every new token into its
 * sequence's pages, attends causally over the page table, and writes logits:
 * all_logits = 0: one row per sequence with want_logits set (its last new
 *                 token), in batch order: the k-th such sequence's row is
 *                 at logits + k * n_vocab; a chunk that needs none costs
 *                 no output matmul;
 * all_logits = 1: one row per new token, in batch order (want_logits ignored).
 * The logits buffer must hold that many rows of n_vocab floats. */
int rs_forward(rs_model *m, rs_kv *kv,
               const int32_t *tokens, int32_t n_tokens,
               const rs_seq *seqs, int32_t n_seqs,
               const int32_t *pages, int32_t n_pages_total,
               int all_logits, float *logits,
               char *err, size_t err_len);

#endif
