/* GGUF v2/v3 reader over a read-only memory map.
 *
 * Every length, count and offset read from the file is checked against the
 * map before it is used: a truncated or corrupt file is an error naming what
 * was wrong, never a read past the end. Nothing is copied: keys, strings and
 * tensor data are pointers into the map. */
#ifndef RS_GGUF_H
#define RS_GGUF_H

#include <stddef.h>
#include <stdint.h>

enum rs_gguf_type {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4,
    GGUF_I32 = 5, GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9,
    GGUF_U64 = 10, GGUF_I64 = 11, GGUF_F64 = 12
};

/* ggml tensor types this engine computes with. */
enum rs_ggml_type {
    RS_GGML_F32 = 0, RS_GGML_F16 = 1, RS_GGML_Q4_0 = 2, RS_GGML_Q4_1 = 3,
    RS_GGML_Q8_0 = 8, RS_GGML_BF16 = 30
};

typedef struct rs_gguf_kv {
    const char *key;
    size_t key_len;
    int type;              /* rs_gguf_type */
    int arr_type;          /* element type when type == GGUF_ARRAY, else -1 */
    uint64_t arr_len;
    const uint8_t *value;  /* scalar value, string record, or first element */
    const uint8_t **str_elems; /* string arrays: record of each element */
} rs_gguf_kv;

typedef struct rs_gguf_tensor {
    const char *name;
    size_t name_len;
    uint32_t n_dims;
    uint64_t ne[4];        /* ne[0] is the contiguous (innermost) dimension */
    int type;              /* ggml type */
    uint64_t offset;       /* relative to the data section */
    const uint8_t *data;   /* NULL until validated by rs_gguf_tensor_data */
} rs_gguf_tensor;

typedef struct rs_gguf {
    const uint8_t *map;
    size_t size;
    uint32_t version;
    uint64_t n_kv;
    rs_gguf_kv *kv;
    uint64_t n_tensors;
    rs_gguf_tensor *tensors;
    uint64_t alignment;
    uint64_t data_offset;  /* start of the tensor data section in the file */
} rs_gguf;

int rs_gguf_open(const char *path, rs_gguf *g, char *err, size_t err_len);
void rs_gguf_close(rs_gguf *g);

int rs_gguf_find_kv(const rs_gguf *g, const char *key);
const rs_gguf_tensor *rs_gguf_find_tensor(const rs_gguf *g, const char *name);

/* Scalar readers: convert any integer / float scalar type; return -1 when the
 * key is absent and an error (RS_ERR_FORMAT) when the type does not fit. */
int rs_gguf_get_i64(const rs_gguf *g, const char *key, int64_t *out, char *err, size_t err_len);
int rs_gguf_get_f64(const rs_gguf *g, const char *key, double *out, char *err, size_t err_len);
/* String value (not NUL-terminated); returns -1 when absent. */
int rs_gguf_get_str(const rs_gguf *g, const char *key, const char **s, size_t *len,
                    char *err, size_t err_len);

/* Numeric element j of a kv (scalar: j ignored). */
int64_t rs_gguf_kv_int(const rs_gguf_kv *kv, uint64_t j);
double rs_gguf_kv_float(const rs_gguf_kv *kv, uint64_t j);
const char *rs_gguf_kv_str(const rs_gguf_kv *kv, uint64_t j, size_t *len);

/* Bytes a tensor of this ggml type and element count occupies; 0 when the
 * type is not one we know, or n is not a whole number of blocks. */
uint64_t rs_ggml_nbytes(int type, uint64_t n_elems);
const char *rs_ggml_type_name(int type);

#endif
