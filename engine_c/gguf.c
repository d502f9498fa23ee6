/* GGUF reader: see gguf.h. The parse is a cursor over the map that refuses
 * to move past its end; every failure names the field that was wrong. */
#define _DEFAULT_SOURCE
#include "gguf.h"
#include "rs_engine.h"
#include "errors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct cursor {
    const uint8_t *p;
    const uint8_t *end;
    char *err;
    size_t err_len;
} cursor;

static int need(cursor *c, uint64_t n, const char *what) {
    if ((uint64_t)(c->end - c->p) < n)
        return rs_fail(c->err, c->err_len, RS_ERR_FORMAT,
                       "truncated GGUF: file ends inside %s", what);
    return RS_OK;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) {
    int rc = need(c, 4, what);
    if (rc) return rc;
    memcpy(v, c->p, 4);
    c->p += 4;
    return RS_OK;
}

static int rd_u64(cursor *c, uint64_t *v, const char *what) {
    int rc = need(c, 8, what);
    if (rc) return rc;
    memcpy(v, c->p, 8);
    c->p += 8;
    return RS_OK;
}

/* A string record: u64 length then bytes. */
static int rd_str(cursor *c, const char **s, size_t *len, const char *what) {
    uint64_t n;
    int rc = rd_u64(c, &n, what);
    if (rc) return rc;
    if ((rc = need(c, n, what))) return rc;
    *s = (const char *)c->p;
    *len = (size_t)n;
    c->p += n;
    return RS_OK;
}

static uint64_t scalar_size(int type) {
    switch (type) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
    case GGUF_U16: case GGUF_I16: return 2;
    case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
    case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
    default: return 0;
    }
}

static int parse_value(cursor *c, rs_gguf_kv *kv) {
    uint32_t type;
    int rc = rd_u32(c, &type, "a metadata value type");
    if (rc) return rc;
    kv->type = (int)type;
    kv->arr_type = -1;
    kv->arr_len = 0;
    kv->value = c->p;
    kv->str_elems = NULL;
    if (type == GGUF_STRING) {
        const char *s;
        size_t n;
        return rd_str(c, &s, &n, "a metadata string");
    }
    if (type == GGUF_ARRAY) {
        uint32_t et;
        uint64_t n;
        if ((rc = rd_u32(c, &et, "an array element type"))) return rc;
        if ((rc = rd_u64(c, &n, "an array length"))) return rc;
        kv->arr_type = (int)et;
        kv->arr_len = n;
        kv->value = c->p;
        if (et == GGUF_STRING) {
            /* each string record is >= 8 bytes: bound n before allocating */
            if (n > (uint64_t)(c->end - c->p) / 8)
                return rs_fail(c->err, c->err_len, RS_ERR_FORMAT,
                               "truncated GGUF: string array of %llu elements does not fit",
                               (unsigned long long)n);
            kv->str_elems = malloc((n ? n : 1) * sizeof(*kv->str_elems));
            if (!kv->str_elems)
                return rs_fail(c->err, c->err_len, RS_ERR_NOMEM, "out of memory for a string array");
            for (uint64_t j = 0; j < n; j++) {
                const char *s;
                size_t len;
                kv->str_elems[j] = c->p;
                if ((rc = rd_str(c, &s, &len, "a string array element"))) return rc;
            }
            return RS_OK;
        }
        uint64_t es = scalar_size((int)et);
        if (es == 0)
            return rs_fail(c->err, c->err_len, RS_ERR_FORMAT,
                           "corrupt GGUF: array element type %u is not valid", et);
        if (n > UINT64_MAX / es) return need(c, UINT64_MAX, "an array");
        if ((rc = need(c, n * es, "an array"))) return rc;
        c->p += n * es;
        return RS_OK;
    }
    uint64_t sz = scalar_size((int)type);
    if (sz == 0)
        return rs_fail(c->err, c->err_len, RS_ERR_FORMAT,
                       "corrupt GGUF: metadata value type %u is not valid", type);
    if ((rc = need(c, sz, "a metadata value"))) return rc;
    c->p += sz;
    return RS_OK;
}

static int parse_tensor_info(cursor *c, rs_gguf_tensor *t) {
    int rc = rd_str(c, &t->name, &t->name_len, "a tensor name");
    if (rc) return rc;
    if ((rc = rd_u32(c, &t->n_dims, "a tensor's dimension count"))) return rc;
    if (t->n_dims < 1 || t->n_dims > 4)
        return rs_fail(c->err, c->err_len, RS_ERR_FORMAT,
                       "corrupt GGUF: tensor '%.*s' has %u dimensions (1..4 allowed)",
                       (int)t->name_len, t->name, t->n_dims);
    for (int d = 0; d < 4; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++)
        if ((rc = rd_u64(c, &t->ne[d], "a tensor dimension"))) return rc;
    uint32_t type;
    if ((rc = rd_u32(c, &type, "a tensor type"))) return rc;
    t->type = (int)type;
    if ((rc = rd_u64(c, &t->offset, "a tensor offset"))) return rc;
    t->data = NULL;
    return RS_OK;
}

static int parse(rs_gguf *g, char *err, size_t err_len) {
    cursor c = {g->map, g->map + g->size, err, err_len};
    int rc;
    if (g->size < 4 || memcmp(g->map, "GGUF", 4) != 0)
        return rs_fail(err, err_len, RS_ERR_FORMAT, "not a GGUF file (bad magic)");
    c.p += 4;
    if ((rc = rd_u32(&c, &g->version, "the header"))) return rc;
    if (g->version != 2 && g->version != 3)
        return rs_fail(err, err_len, RS_ERR_UNSUPPORTED,
                       "unsupported GGUF version %u (2 and 3 are supported)", g->version);
    if ((rc = rd_u64(&c, &g->n_tensors, "the header"))) return rc;
    if ((rc = rd_u64(&c, &g->n_kv, "the header"))) return rc;
    /* each kv takes >= 12 bytes and each tensor info >= 24: bound before allocating */
    uint64_t room = (uint64_t)(c.end - c.p);
    if (g->n_kv > room / 12 || g->n_tensors > room / 24)
        return rs_fail(err, err_len, RS_ERR_FORMAT,
                       "truncated GGUF: header claims %llu metadata entries and %llu tensors",
                       (unsigned long long)g->n_kv, (unsigned long long)g->n_tensors);
    g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof(*g->kv));
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof(*g->tensors));
    if (!g->kv || !g->tensors) return rs_fail(err, err_len, RS_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < g->n_kv; i++) {
        if ((rc = rd_str(&c, &g->kv[i].key, &g->kv[i].key_len, "a metadata key"))) return rc;
        if ((rc = parse_value(&c, &g->kv[i]))) return rc;
    }
    g->alignment = 32;
    int ai = rs_gguf_find_kv(g, "general.alignment");
    if (ai >= 0) {
        if (g->kv[ai].type != GGUF_U32)
            return rs_fail(err, err_len, RS_ERR_FORMAT, "corrupt GGUF: general.alignment is not a u32");
        g->alignment = (uint64_t)rs_gguf_kv_int(&g->kv[ai], 0);
        if (g->alignment == 0 || (g->alignment & (g->alignment - 1)))
            return rs_fail(err, err_len, RS_ERR_FORMAT,
                           "corrupt GGUF: general.alignment %llu is not a power of two",
                           (unsigned long long)g->alignment);
    }
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if ((rc = parse_tensor_info(&c, &g->tensors[i]))) return rc;
    uint64_t pos = (uint64_t)(c.p - g->map);
    g->data_offset = (pos + g->alignment - 1) / g->alignment * g->alignment;
    if (g->data_offset > g->size)
        return rs_fail(err, err_len, RS_ERR_FORMAT, "truncated GGUF: no tensor data section");
    /* every tensor of a known type must lie inside the file */
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        rs_gguf_tensor *t = &g->tensors[i];
        uint64_t n = t->ne[0];
        for (int d = 1; d < 4; d++) {
            if (t->ne[d] && n > UINT64_MAX / t->ne[d])
                return rs_fail(err, err_len, RS_ERR_FORMAT, "corrupt GGUF: tensor '%.*s' is too large",
                               (int)t->name_len, t->name);
            n *= t->ne[d];
        }
        uint64_t nb = rs_ggml_nbytes(t->type, n);
        if (nb == 0) continue; /* a type we never compute with: checked when used */
        if (t->offset % g->alignment)
            return rs_fail(err, err_len, RS_ERR_FORMAT, "corrupt GGUF: tensor '%.*s' is misaligned",
                           (int)t->name_len, t->name);
        uint64_t avail = g->size - g->data_offset;
        if (t->offset > avail || nb > avail - t->offset)
            return rs_fail(err, err_len, RS_ERR_FORMAT,
                           "truncated GGUF: tensor '%.*s' (%llu bytes at offset %llu) runs past the end of the file",
                           (int)t->name_len, t->name, (unsigned long long)nb,
                           (unsigned long long)t->offset);
        t->data = g->map + g->data_offset + t->offset;
    }
    return RS_OK;
}

int rs_gguf_open(const char *path, rs_gguf *g, char *err, size_t err_len) {
    memset(g, 0, sizeof(*g));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return rs_fail(err, err_len, RS_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return rs_fail(err, err_len, RS_ERR_IO, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return rs_fail(err, err_len, RS_ERR_IO, "%s is not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return rs_fail(err, err_len, RS_ERR_FORMAT, "not a GGUF file: %s is empty", path);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) return rs_fail(err, err_len, RS_ERR_IO, "cannot map %s: %s", path, strerror(e));
    g->map = map;
    g->size = (size_t)st.st_size;
    int rc = parse(g, err, err_len);
    if (rc) rs_gguf_close(g);
    return rc;
}

void rs_gguf_close(rs_gguf *g) {
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++) free(g->kv[i].str_elems);
    free(g->kv);
    free(g->tensors);
    if (g->map) munmap((void *)g->map, g->size);
    memset(g, 0, sizeof(*g));
}

int rs_gguf_find_kv(const rs_gguf *g, const char *key) {
    size_t n = strlen(key);
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key_len == n && memcmp(g->kv[i].key, key, n) == 0) return (int)i;
    return -1;
}

const rs_gguf_tensor *rs_gguf_find_tensor(const rs_gguf *g, const char *name) {
    size_t n = strlen(name);
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].name_len == n && memcmp(g->tensors[i].name, name, n) == 0)
            return &g->tensors[i];
    return NULL;
}

static const uint8_t *elem_ptr(const rs_gguf_kv *kv, uint64_t j, int *type) {
    if (kv->type == GGUF_ARRAY) {
        *type = kv->arr_type;
        return kv->value + j * scalar_size(kv->arr_type);
    }
    *type = kv->type;
    return kv->value;
}

int64_t rs_gguf_kv_int(const rs_gguf_kv *kv, uint64_t j) {
    int t;
    const uint8_t *p = elem_ptr(kv, j, &t);
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
            uint64_t u64; int64_t i64; float f32; double f64; } v;
    memcpy(&v, p, scalar_size(t) ? scalar_size(t) : 1);
    switch (t) {
    case GGUF_U8: case GGUF_BOOL: return v.u8;
    case GGUF_I8: return v.i8;
    case GGUF_U16: return v.u16;
    case GGUF_I16: return v.i16;
    case GGUF_U32: return v.u32;
    case GGUF_I32: return v.i32;
    case GGUF_U64: return (int64_t)v.u64;
    case GGUF_I64: return v.i64;
    case GGUF_F32: return (int64_t)v.f32;
    case GGUF_F64: return (int64_t)v.f64;
    default: return 0;
    }
}

double rs_gguf_kv_float(const rs_gguf_kv *kv, uint64_t j) {
    int t;
    const uint8_t *p = elem_ptr(kv, j, &t);
    if (t == GGUF_F32) { float f; memcpy(&f, p, 4); return f; }
    if (t == GGUF_F64) { double d; memcpy(&d, p, 8); return d; }
    return (double)rs_gguf_kv_int(kv, j);
}

const char *rs_gguf_kv_str(const rs_gguf_kv *kv, uint64_t j, size_t *len) {
    const uint8_t *rec = kv->type == GGUF_STRING ? kv->value : kv->str_elems[j];
    uint64_t n;
    memcpy(&n, rec, 8);
    *len = (size_t)n;
    return (const char *)rec + 8;
}

static int is_number(int t) {
    return t != GGUF_STRING && t != GGUF_ARRAY && scalar_size(t) != 0;
}

int rs_gguf_get_i64(const rs_gguf *g, const char *key, int64_t *out, char *err, size_t err_len) {
    int i = rs_gguf_find_kv(g, key);
    if (i < 0) return -1;
    if (!is_number(g->kv[i].type) || g->kv[i].type == GGUF_F32 || g->kv[i].type == GGUF_F64)
        return rs_fail(err, err_len, RS_ERR_FORMAT, "metadata %s is not an integer", key);
    *out = rs_gguf_kv_int(&g->kv[i], 0);
    return RS_OK;
}

int rs_gguf_get_f64(const rs_gguf *g, const char *key, double *out, char *err, size_t err_len) {
    int i = rs_gguf_find_kv(g, key);
    if (i < 0) return -1;
    if (!is_number(g->kv[i].type))
        return rs_fail(err, err_len, RS_ERR_FORMAT, "metadata %s is not a number", key);
    *out = rs_gguf_kv_float(&g->kv[i], 0);
    return RS_OK;
}

int rs_gguf_get_str(const rs_gguf *g, const char *key, const char **s, size_t *len,
                    char *err, size_t err_len) {
    int i = rs_gguf_find_kv(g, key);
    if (i < 0) return -1;
    if (g->kv[i].type != GGUF_STRING)
        return rs_fail(err, err_len, RS_ERR_FORMAT, "metadata %s is not a string", key);
    *s = rs_gguf_kv_str(&g->kv[i], 0, len);
    return RS_OK;
}

uint64_t rs_ggml_nbytes(int type, uint64_t n) {
    switch (type) {
    case RS_GGML_F32: return n > UINT64_MAX / 4 ? 0 : n * 4;
    case RS_GGML_F16: case RS_GGML_BF16: return n > UINT64_MAX / 2 ? 0 : n * 2;
    case RS_GGML_Q4_0: return n % 32 ? 0 : n / 32 * 18;
    case RS_GGML_Q4_1: return n % 32 ? 0 : n / 32 * 20;
    case RS_GGML_Q8_0: return n % 32 ? 0 : n / 32 * 34;
    default: return 0;
    }
}

const char *rs_ggml_type_name(int type) {
    static const struct { int t; const char *n; } names[] = {
        {0, "F32"}, {1, "F16"}, {2, "Q4_0"}, {3, "Q4_1"}, {6, "Q5_0"}, {7, "Q5_1"},
        {8, "Q8_0"}, {9, "Q8_1"}, {10, "Q2_K"}, {11, "Q3_K"}, {12, "Q4_K"}, {13, "Q5_K"},
        {14, "Q6_K"}, {15, "Q8_K"}, {16, "IQ2_XXS"}, {17, "IQ2_XS"}, {18, "IQ3_XXS"},
        {19, "IQ1_S"}, {20, "IQ4_NL"}, {21, "IQ3_S"}, {22, "IQ2_S"}, {23, "IQ4_XS"},
        {24, "I8"}, {25, "I16"}, {26, "I32"}, {27, "I64"}, {28, "F64"}, {29, "IQ1_M"},
        {30, "BF16"}, {34, "TQ1_0"}, {35, "TQ2_0"}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].t == type) return names[i].n;
    return "unknown";
}
