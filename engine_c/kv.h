/* The paged KV store. One page holds page_size consecutive positions of K
 * and V for every layer, so copying or saving a page is one memcpy:
 *
 *   page p: [layer 0: K[ps][kvd] V[ps][kvd]] [layer 1: ...] ... [layer L-1]
 *   kvd = n_head_kv * head_dim, elements of elem_size bytes (f16 or f32)
 */
#ifndef RS_KV_H
#define RS_KV_H

#include <stddef.h>
#include <stdint.h>

struct rs_kv {
    uint8_t *data;
    int n_pages;
    int page_size;
    int dtype;          /* rs_kv_dtype */
    int elem_size;
    int n_layer;
    int kvd;
    size_t page_bytes;
    size_t layer_bytes; /* K and V of one layer within a page */
    uint64_t model_id;  /* the layer/head geometry it was made for */
};

/* K (which=0) or V (which=1) of layer l in page p: ps rows of kvd elements. */
static inline uint8_t *rs_kv_ptr(const struct rs_kv *kv, int32_t p, int l, int which) {
    return kv->data + (size_t)p * kv->page_bytes + (size_t)l * kv->layer_bytes +
           (size_t)which * (kv->layer_bytes / 2);
}

#endif
