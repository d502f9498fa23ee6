/* KV page store: the engine stores data; which page ids are free is the
 * caller's business (the scheduler's allocator). */
#define _DEFAULT_SOURCE
#include "kv.h"
#include "errors.h"
#include "model.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

uint64_t rs_kv_page_bytes(const rs_model *m, int page_size, int dtype) {
    uint64_t es = dtype == RS_KV_F32 ? 4 : 2;
    return (uint64_t)m->hp.n_layer * 2 * (uint64_t)page_size * (uint64_t)m->hp.n_head_kv *
           (uint64_t)m->hp.head_dim * es;
}

int rs_kv_create(const rs_model *m, int n_pages, int page_size, int dtype, rs_kv **out,
                 char *err, size_t err_len) {
    *out = NULL;
    if (dtype != RS_KV_F16 && dtype != RS_KV_F32)
        return rs_fail(err, err_len, RS_ERR_ARG, "unknown KV dtype %d (0 = f16, 1 = f32)", dtype);
    if (page_size < 1 || page_size > 4096)
        return rs_fail(err, err_len, RS_ERR_ARG, "page_size must be in 1..4096, got %d", page_size);
    if (n_pages < 1)
        return rs_fail(err, err_len, RS_ERR_ARG, "the KV store needs at least one page, got %d", n_pages);
    uint64_t pb = rs_kv_page_bytes(m, page_size, dtype);
    if ((uint64_t)n_pages > (SIZE_MAX / 2) / pb)
        return rs_fail(err, err_len, RS_ERR_NOMEM, "%d pages of %llu bytes do not fit in memory",
                       n_pages, (unsigned long long)pb);
    rs_kv *kv = calloc(1, sizeof(*kv));
    if (!kv) return rs_fail(err, err_len, RS_ERR_NOMEM, "out of memory");
    size_t total = (size_t)pb * (size_t)n_pages;
    /* anonymous mapping: zero pages cost nothing until first written */
    void *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        free(kv);
        return rs_fail(err, err_len, RS_ERR_NOMEM, "cannot allocate %zu bytes for %d KV pages", total, n_pages);
    }
    kv->data = p;
    kv->n_pages = n_pages;
    kv->page_size = page_size;
    kv->dtype = dtype;
    kv->elem_size = dtype == RS_KV_F32 ? 4 : 2;
    kv->n_layer = m->hp.n_layer;
    kv->kvd = m->hp.n_head_kv * m->hp.head_dim;
    kv->page_bytes = (size_t)pb;
    kv->layer_bytes = (size_t)pb / (size_t)m->hp.n_layer;
    kv->model_id = (uint64_t)m->hp.n_layer << 32 | (uint64_t)kv->kvd;
    *out = kv;
    return RS_OK;
}

void rs_kv_free(rs_kv *kv) {
    if (!kv) return;
    munmap(kv->data, kv->page_bytes * (size_t)kv->n_pages);
    free(kv);
}

int rs_kv_n_pages(const rs_kv *kv) { return kv->n_pages; }
int rs_kv_page_size(const rs_kv *kv) { return kv->page_size; }
int rs_kv_dtype(const rs_kv *kv) { return kv->dtype; }

static int check_page(const rs_kv *kv, int32_t p, const char *what, char *err, size_t err_len) {
    if (p < 0 || p >= kv->n_pages)
        return rs_fail(err, err_len, RS_ERR_ARG, "%s page id %d is outside the pool [0, %d)", what, p, kv->n_pages);
    return RS_OK;
}

int rs_kv_copy_page(rs_kv *kv, int32_t src, int32_t dst, char *err, size_t err_len) {
    int rc;
    if ((rc = check_page(kv, src, "source", err, err_len))) return rc;
    if ((rc = check_page(kv, dst, "destination", err, err_len))) return rc;
    if (src != dst)
        memcpy(kv->data + (size_t)dst * kv->page_bytes, kv->data + (size_t)src * kv->page_bytes, kv->page_bytes);
    return RS_OK;
}

int rs_kv_read_page(const rs_kv *kv, int32_t page, void *dst, char *err, size_t err_len) {
    int rc = check_page(kv, page, "", err, err_len);
    if (rc) return rc;
    memcpy(dst, kv->data + (size_t)page * kv->page_bytes, kv->page_bytes);
    return RS_OK;
}

int rs_kv_write_page(rs_kv *kv, int32_t page, const void *src, char *err, size_t err_len) {
    int rc = check_page(kv, page, "", err, err_len);
    if (rc) return rc;
    memcpy(kv->data + (size_t)page * kv->page_bytes, src, kv->page_bytes);
    return RS_OK;
}
