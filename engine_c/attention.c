/* Attention over the paged KV store, for every token of a batch.
 *
 * A query's positions are cut into chunks fixed by position: chunk c holds
 * positions [c*CL, (c+1)*CL), CL = ATTN_CHUNK rounded down to whole pages (at
 * least one page). Per chunk: the scores, a softmax over the chunk (which
 * returns its max m_c and sum S_c) and the V sum with the chunk's weights,
 * acc_c. Then each query merges its chunks in chunk order:
 *     M = max_c m_c,  e_c = exp(m_c - M) * S_c,  Z = sum_c e_c,
 *     a = sum_c (e_c / Z) * acc_c
 * (one chunk: e_0 / Z is exactly 1 and a = acc_0). Chunks depend only on the
 * query's position and the store's page size, never on the batch, on how the
 * prompt was split or on threads, so results stay bit-identical across them
 * (the kernels fix each query's operations: kernels.h). And a long sequence's
 * chunks are separate tasks: its pages are read once per step, spread over
 * every thread (flash-decoding), where one task per KV head used to walk them
 * all while the other threads waited.
 *
 * Tasks: (group of ATTN_GROUP consecutive batch tokens, chunk), every head,
 * the chunk innermost so that a thread's contiguous share of tasks
 * (threadpool.c) walks consecutive pages. Within a task the loops run
 * page-major: page i of every token of the group, then page i+1, so a page
 * is read whole and in order (one KV head per task read a third of each row,
 * 128 of every 384 bytes, and stalled on memory), and a page that several
 * sequences share (a common prompt) is fetched once and re-read from L1; per
 * page and KV head, the queries of all group tokens that read that physical
 * page go to one multi-query kernel call. With few tasks (a small decode
 * batch over a short context) the query heads are split over tasks too
 * (head_split), at whole KV heads where that makes enough tasks, so each
 * task reads only its own heads' columns of the pages.
 *
 * A token's partials (acc_c, m_c, S_c) must all exist until its merge:
 * tokens go in waves whose partials fit ATTN_WAVE_BYTES, each wave one pool
 * run of chunk tasks and one of merges. */
#include "forward.h"
#include "threadpool.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum {
    ATTN_GROUP = 16,  /* batch tokens per task: a prefill's pages are read by 16 tokens' queries (8: prefill
                         at 8,192 positions 9.5 % slower, decode of 16 streams the same) */
    ATTN_CHUNK = 512, /* positions per chunk, rounded down to whole pages (256 -> 512, A/B: prefill at
                         8,192 positions +7-15 %, at 2,048 +7 %, 8 streams +2 %, decode at 1,024 and 4,096
                         and prefill 512 the same; 1,024: as 512) */
    ATTN_QCAP = 64,   /* queries per multi-query kernel call */
    ATTN_PF_ROWS = 192, /* rows prefetched ahead of the walk: 12 pages of 16. One stream over 4,096
                           positions, A/B (tok/s, 2 threads): 2 pages 120, 3 pages 124-127, 6 pages 107-113,
                           12 pages 122-128, 16 pages 118, 24 pages 113; 1 thread: 6 pages 62, 12 pages 72;
                           8 and 16 streams over a shared prompt: the same for 3, 6 and 12 pages */
    ATTN_KEEP = 8,    /* KV heads a task keeps its shared-page batches for (repeat_batches) */
};
#define ATTN_WAVE_BYTES ((size_t)16 << 20)

static int chunk_pages(const rs_kv *kv) {
    int cp = ATTN_CHUNK / kv->page_size;
    return cp > 0 ? cp : 1;
}

static int n_seq_pages(const fwd *f, int t) { return f->tok_pos[t] / f->kv->page_size + 1; }

static int n_chunks(const fwd *f, int t) {
    int cp = chunk_pages(f->kv);
    return (n_seq_pages(f, t) + cp - 1) / cp;
}

/* floats of one partial: acc[hd], then m (which the merge turns into exp(m - M)), then S */
static size_t rec_floats(const fwd *f) { return (size_t)f->m->hp.head_dim + 2; }

int rs_attn_alloc(fwd *f) {
    const rs_hparams *hp = &f->m->hp;
    int cp = chunk_pages(f->kv), ps = f->kv->page_size;
    int max_pages = (f->max_ctx + ps - 1) / ps;
    size_t nch = (size_t)((max_pages + cp - 1) / cp);
    size_t per_token = (size_t)hp->n_head * nch * rec_floats(f) * sizeof(float);
    size_t wave = ATTN_WAVE_BYTES / per_token / ATTN_GROUP * ATTN_GROUP;
    if (wave < ATTN_GROUP) wave = ATTN_GROUP;
    if (wave > (size_t)f->T) wave = (size_t)f->T;
    f->attn_wave = (int)wave;
    size_t group_rows = (size_t)ATTN_GROUP * (size_t)hp->n_head;
    /* a score row spans one chunk, or the whole context when that is shorter */
    f->attn_cl = cp * ps < max_pages * ps ? cp * ps : max_pages * ps;
    f->scores = malloc((size_t)rs_pool_size(f->m->pool) * group_rows * (size_t)f->attn_cl * sizeof(float));
    f->part = malloc(wave * per_token);
    return f->scores && f->part;
}

void rs_attn_free(fwd *f) {
    free(f->scores);
    free(f->part);
    f->scores = f->part = NULL;
}

typedef struct attn_job {
    fwd *f;
    int layer;
    int head_split; /* tasks per (group, chunk), each a slice of the query heads: > 1 spreads a small batch */
    int w0, w1;     /* this wave's batch tokens */
    int n_ch;       /* chunks of its longest sequence */
} attn_job;

/* the partial of (token t, head h, chunk c) within the wave */
static float *rec(const attn_job *j, int t, int h, int c) {
    const fwd *f = j->f;
    return f->part + (((size_t)(t - j->w0) * (size_t)f->m->hp.n_head + (size_t)h) * (size_t)j->n_ch + (size_t)c) *
                         rec_floats(f);
}

/* Where the V sums of (token t, head h, chunk c) go: the partial, or, when
 * no token of the wave has a second chunk, the output itself. The merge of
 * one chunk is the identity (e_0 / Z = S_0 / S_0 = 1, then +0 + x = x; bit
 * for bit but for a sum of exactly -0, which it makes +0: equal to
 * everything downstream), so it is skipped with its pool run: one hand-off
 * fewer per layer for every context up to a chunk (decode of a short chat,
 * a short prompt). */
static float *v_sums(const attn_job *j, int t, int h, int c) {
    const fwd *f = j->f;
    if (j->n_ch == 1) return f->h + ((size_t)t * (size_t)f->m->hp.n_head + (size_t)h) * (size_t)f->m->hp.head_dim;
    return rec(j, t, h, c);
}

/* Prefetch one page's rows of these heads. Far ahead into L2 (T2 hint),
 * not L1: a microbenchmark of this walk streams 10 GB/s that way against
 * 4.8 with T0 or none (L1's few miss buffers fill up); decode at 4,000
 * positions 81-86 -> 99-104 tok/s (A/B x3), and every other line,
 * prefetchnta or T0 measured 20-25 % slower there. The page the walk reads
 * next (l1) goes on into L1 (T0). */
static void prefetch_page(const uint8_t *p, int np, size_t row_bytes, size_t head_bytes, int l1) {
    for (int r = 0; r < np; r++)
        for (size_t o = 0; o < head_bytes; o += 64) {
            if (l1) __builtin_prefetch(p + (size_t)r * row_bytes + o, 0, 3);
            else __builtin_prefetch(p + (size_t)r * row_bytes + o, 0, 1);
        }
}

/* queries (or weight rows) gathered for one multi-query kernel call */
typedef struct attn_batch {
    int nq, npmax;
    const uint8_t *page;
    const float *in[ATTN_QCAP]; /* scores: the queries; accum: the weights */
    float *out[ATTN_QCAP];      /* scores: the score rows; accum: the sums */
    int np[ATTN_QCAP];
} attn_batch;

/* One multi-query kernel call over the batch (which 0: scores, 1: V sums) */
static void attn_call(const fwd *f, int which, const attn_batch *b) {
    const rs_kernels *K = f->K;
    const rs_kv *kv = f->kv;
    int hd = f->m->hp.head_dim;
    if (which == 0) {
        float scale = 1.0f / sqrtf((float)hd);
        if (kv->dtype == RS_KV_F16)
            K->attn_scores_f16_multi(b->npmax, hd, (const uint16_t *)b->page, (size_t)kv->kvd, b->nq, b->in, scale, b->out);
        else
            K->attn_scores_f32_multi(b->npmax, hd, (const float *)b->page, (size_t)kv->kvd, b->nq, b->in, scale, b->out);
    } else {
        if (kv->dtype == RS_KV_F16)
            K->attn_accum_f16_multi(hd, (const uint16_t *)b->page, (size_t)kv->kvd, b->nq, b->np, b->in, b->out);
        else
            K->attn_accum_f32_multi(hd, (const float *)b->page, (size_t)kv->kvd, b->nq, b->np, b->in, b->out);
    }
}

static void attn_flush(const fwd *f, int which, attn_batch *b) {
    if (b->nq) attn_call(f, which, b);
    b->nq = 0, b->npmax = 0;
}

/* The calls of page i - 1 (n KV heads' batches, every query reading all
 * ps rows) for page i, whose head columns start at `page`: the score rows
 * (scores) or the weights (V sums) move on by ps, the outputs (V sums) stay. */
static void repeat_batches(const fwd *f, int which, attn_batch *keep, int n, const uint8_t *page, size_t head_bytes,
                           int ps) {
    for (int g = 0; g < n; g++) {
        attn_batch *b = &keep[g];
        b->page = page + (size_t)g * head_bytes;
        if (which == 0)
            for (int q = 0; q < b->nq; q++) b->out[q] += ps;
        else
            for (int q = 0; q < b->nq; q++) b->in[q] += ps;
        attn_call(f, which, b);
    }
}

static void chunk_task(void *ctx, int task, int thread) {
    const attn_job *j = ctx;
    fwd *f = j->f;
    const rs_hparams *hp = &f->m->hp;
    const rs_kv *kv = f->kv;
    int hd = hp->head_dim, nh = hp->n_head, ps = kv->page_size, G = nh / hp->n_head_kv;
    int cp = chunk_pages(kv), cl = f->attn_cl, pf = ATTN_PF_ROWS / ps > 0 ? ATTN_PF_ROWS / ps : 1;
    int split = j->head_split;
    int sub = task % split;
    task /= split;
    int c = task % j->n_ch;
    int t0 = j->w0 + task / j->n_ch * ATTN_GROUP;
    int t1 = t0 + ATTN_GROUP < j->w1 ? t0 + ATTN_GROUP : j->w1;
    int h0 = sub * nh / split, h1 = (sub + 1) * nh / split; /* this task's query heads */
    int g0 = h0 / G, g1 = (h1 - 1) / G + 1;                 /* and their KV heads */
    int p0 = c * cp, pend = p0;                             /* the chunk's pages that some token reads */
    for (int t = t0; t < t1; t++) {
        int e = n_seq_pages(f, t) < p0 + cp ? n_seq_pages(f, t) : p0 + cp;
        pend = e > pend ? e : pend;
    }
    if (pend == p0 || h0 == h1) return;
    size_t row_bytes = (size_t)kv->kvd * kv->elem_size, head_bytes = (size_t)hd * kv->elem_size;
    size_t pf_off = (size_t)g0 * head_bytes, pf_bytes = (size_t)(g1 - g0) * head_bytes;
    /* the task after this one (threads take consecutive tasks): the next
     * head slice of this chunk, or the first slice of the next chunk */
    int nsub = (sub + 1) % split, nh0 = nsub * nh / split, nh1 = (nsub + 1) * nh / split;
    int np0 = nsub ? p0 : p0 + cp; /* its first page */
    size_t npf_off = (size_t)(nh0 / G) * head_bytes, npf_bytes = (size_t)((nh1 - 1) / G + 1 - nh0 / G) * head_bytes;
    /* row (t - t0) * nh + h of sc: query (t, h)'s scores in the chunk */
    float *sc = f->scores + (size_t)thread * ATTN_GROUP * nh * cl;
    attn_batch b;
    b.nq = 0, b.npmax = 0, b.page = NULL;
    /* Prefetch pf pages (ATTN_PF_ROWS rows) ahead where few queries share a page (decode:
     * one token per sequence) and the walk is memory-bound; a prefill group
     * (one sequence's tokens) computes long enough per page that it only
     * costs (measured). The walk runs on past the chunk: this thread's next
     * task is usually the next chunk. */
    int pf_on = !(t1 - t0 > 1 && f->tok_seq[t0] == f->tok_seq[t1 - 1]);
    /* each token's page table, and its positions */
    const int32_t *pt[ATTN_GROUP];
    int npos[ATTN_GROUP];
    for (int t = t0; t < t1; t++) {
        pt[t - t0] = f->pages + f->seqs[f->tok_seq[t]].page_offset;
        npos[t - t0] = f->tok_pos[t] + 1;
    }

    /* Batches of the last page when every token of the group read it whole
     * (a shared prompt's page): the next such page takes the same calls,
     * moved one page on, without rebuilding them (repeat_batches). */
    attn_batch keep[ATTN_KEEP];
    for (int which = 0; which < 2; which++) {
        int kept = 0; /* keep[] holds page i - 1's batches */
        /* page p's rows of this layer's K or V: base + p * page_bytes */
        const uint8_t *base = rs_kv_ptr(kv, 0, j->layer, which);
        const uint8_t *other = rs_kv_ptr(kv, 0, j->layer, !which);
        /* The pass's first pages: K's at the task's start; V's only those the
         * K pass's tail has not asked for (a chunk shorter than pf pages). */
        int warm = which == 0 ? pf : pf - (pend - p0) > 0 ? pf - (pend - p0) : 0;
        for (int t = t0; t < t1 && pf_on; t++)
            for (int i = p0; i < p0 + warm && i < n_seq_pages(f, t); i++)
                prefetch_page(base + (size_t)pt[t - t0][i] * kv->page_bytes + pf_off, ps, row_bytes, pf_bytes, 0);
        for (int i = p0; i < pend; i++) {
            const uint8_t *last_pf = NULL;
            for (int t = t0; t < t1 && pf_on; t++) {
                /* pf pages ahead; past the pass's last page, the K pass asks
                 * for the chunk's first V pages (the V pass starts warm) and
                 * the V pass for the first K pages of this thread's next task
                 * (usually the task after this one) */
                int ip = i + pf, n = npos[t - t0];
                const uint8_t *pb = base;
                size_t off = pf_off, bytes = pf_bytes;
                if (ip >= pend) {
                    pb = other;
                    if (which == 0) {
                        if ((ip = p0 + ip - pend) >= pend) continue;
                    } else {
                        ip = np0 + ip - pend, off = npf_off, bytes = npf_bytes;
                    }
                }
                if (ip * ps >= n) continue;
                const uint8_t *pp = pb + (size_t)pt[t - t0][ip] * kv->page_bytes + off;
                if (pp != last_pf) prefetch_page(pp, n - ip * ps < ps ? n - ip * ps : ps, row_bytes, bytes, 0);
                last_pf = pp;
            }
            /* and the next page of this pass into L1, where the far
             * prefetch left it in L2: the kernels' loads then wait less
             * (one stream over 4,096 positions +8 % at 2 threads, +12 % at
             * 1; 1, 2 and 8 streams over 1,024 the same) */
            last_pf = NULL;
            for (int t = t0; t < t1 && pf_on; t++) {
                int ip = i + 1, n = npos[t - t0];
                if (ip >= pend || ip * ps >= n) continue;
                const uint8_t *pp = base + (size_t)pt[t - t0][ip] * kv->page_bytes + pf_off;
                if (pp != last_pf) prefetch_page(pp, n - ip * ps < ps ? n - ip * ps : ps, row_bytes, pf_bytes, 1);
                last_pf = pp;
            }
            /* page i of each token (NULL: its positions end before it) */
            const uint8_t *pg[ATTN_GROUP];
            int whole = g1 - g0 <= ATTN_KEEP; /* every token reads all of page i, the same one */
            for (int t = t0; t < t1; t++) {
                pg[t - t0] = i * ps < npos[t - t0] ? base + (size_t)pt[t - t0][i] * kv->page_bytes : NULL;
                whole &= pg[t - t0] == pg[0] && npos[t - t0] >= (i + 1) * ps;
            }
            if (whole && kept) {
                repeat_batches(f, which, keep, g1 - g0, pg[0] + (size_t)g0 * head_bytes, head_bytes, ps);
                continue;
            }
            kept = whole;
            /* page-major, then KV head: the page's rows are read whole,
             * one head's columns after another, while they sit in L1 */
            for (int g = g0; g < g1; g++) {
                int hs = h0 > g * G ? h0 : g * G, he = h1 < (g + 1) * G ? h1 : (g + 1) * G;
                size_t head_off = (size_t)g * head_bytes;
                int added = 0;
                for (int t = t0; t < t1; t++) {
                    if (!pg[t - t0]) continue;
                    int n = npos[t - t0];
                    const uint8_t *p = pg[t - t0] + head_off;
                    if (p != b.page) attn_flush(f, which, &b);
                    b.page = p;
                    int np = n - i * ps < ps ? n - i * ps : ps;
                    for (int h = hs; h < he; h++) {
                        if (b.nq == ATTN_QCAP) attn_flush(f, which, &b);
                        float *row = sc + ((size_t)(t - t0) * nh + h) * cl + (size_t)(i - p0) * ps;
                        b.in[b.nq] = which == 0 ? f->q + ((size_t)t * nh + h) * hd : row;
                        b.out[b.nq] = which == 0 ? row : v_sums(j, t, h, c);
                        b.np[b.nq] = np;
                        b.npmax = np > b.npmax ? np : b.npmax;
                        b.nq++, added++;
                    }
                }
                if (kept && b.nq && b.nq == added)
                    keep[g - g0] = b; /* one batch holds the head's queries: the next page repeats it */
                else
                    kept = 0;
                attn_flush(f, which, &b);
                b.page = NULL;
            }
        }
        if (which == 0)
            for (int t = t0; t < t1; t++) {
                int n = f->tok_pos[t] + 1;
                if (n <= p0 * ps) continue;
                int len = (n < (p0 + cp) * ps ? n : (p0 + cp) * ps) - p0 * ps;
                for (int h = h0; h < h1; h++) {
                    float *r = rec(j, t, h, c);
                    r[hd + 1] = f->K->softmax(sc + ((size_t)(t - t0) * nh + h) * cl, len, &r[hd]);
                    memset(v_sums(j, t, h, c), 0, (size_t)hd * sizeof(float));
                }
            }
    }
}

/* Merge the chunks of one group's tokens, for one query head, into f->h
 * (a task per head: a small batch's merge is one group, which would
 * otherwise leave the other threads waiting). */
static void merge_task(void *ctx, int task, int thread) {
    (void)thread;
    const attn_job *j = ctx;
    fwd *f = j->f;
    int hd = f->m->hp.head_dim, nh = f->m->hp.n_head, h = task % nh;
    int t0 = j->w0 + task / nh * ATTN_GROUP;
    int t1 = t0 + ATTN_GROUP < j->w1 ? t0 + ATTN_GROUP : j->w1;
    for (int t = t0; t < t1; t++) {
        int nc = n_chunks(f, t);
        float M = -INFINITY, Z = 0.0f;
        for (int c = 0; c < nc; c++) M = rec(j, t, h, c)[hd] > M ? rec(j, t, h, c)[hd] : M;
        for (int c = 0; c < nc; c++) { /* m_c becomes exp(m_c - M), computed once (a long prefill's merge was half expf) */
            float *r = rec(j, t, h, c);
            r[hd] = expf(r[hd] - M);
            Z += r[hd] * r[hd + 1];
        }
        float *out = f->h + (size_t)t * nh * hd + (size_t)h * hd;
        memset(out, 0, (size_t)hd * sizeof(float));
        for (int c = 0; c < nc; c++) {
            const float *r = rec(j, t, h, c);
            float beta = r[hd] * r[hd + 1] / Z;
            for (int i = 0; i < hd; i++) out[i] += beta * r[i];
        }
    }
}

/* Slices of the query heads for at least `want` tasks per (group, chunk):
 * whole KV heads per slice where that is enough (a divisor of n_head_kv:
 * equal slices, and no slice reads part of another's K/V columns), else
 * equal groups of query heads within KV heads, else any equal groups (a
 * divisor of n_head), else one head per slice. */
static int head_split(const rs_hparams *hp, int want) {
    for (int d = want; d <= hp->n_head_kv; d++)
        if (hp->n_head_kv % d == 0) return d;
    for (int d = want; d < hp->n_head; d++)
        if (hp->n_head % d == 0 && d % hp->n_head_kv == 0) return d;
    for (int d = want; d < hp->n_head; d++)
        if (hp->n_head % d == 0) return d;
    return hp->n_head;
}

void rs_attention(fwd *f, int layer) {
    const rs_hparams *hp = &f->m->hp;
    int threads = rs_pool_size(f->m->pool);
    for (int w0 = 0; w0 < f->T; w0 += f->attn_wave) {
        attn_job j = {f, layer, 1, w0, w0 + f->attn_wave < f->T ? w0 + f->attn_wave : f->T, 1};
        for (int t = j.w0; t < j.w1; t++) j.n_ch = n_chunks(f, t) > j.n_ch ? n_chunks(f, t) : j.n_ch;
        int groups = (j.w1 - j.w0 + ATTN_GROUP - 1) / ATTN_GROUP;
        int n_tasks = groups * j.n_ch;
        if (n_tasks < 4 * threads) j.head_split = head_split(hp, (4 * threads + n_tasks - 1) / n_tasks);
        rs_pool_run(f->m->pool, n_tasks * j.head_split, chunk_task, &j);
        if (j.n_ch > 1) rs_pool_run(f->m->pool, groups * hp->n_head, merge_task, &j);
    }
}
