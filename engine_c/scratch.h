/* Per-thread scratch memory for kernels (scratch.c). */
#ifndef RS_SCRATCH_H
#define RS_SCRATCH_H

#include <stddef.h>

/* At least n bytes, 64-byte aligned, owned by the calling thread and valid
 * until its next call (which may move it); NULL when out of memory. */
void *rs_scratch(size_t n);

#endif
