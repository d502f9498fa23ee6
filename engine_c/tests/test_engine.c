/* The whole engine under AddressSanitizer/UBSan: every error path of the
 * GGUF reader on truncated and corrupt files, argument checks of the KV store
 * and the forward, and a small forward whose logits must not depend on how
 * the prompt is chunked; the thread pool runs every task exactly once,
 * stealing included. Usage: test_engine MODEL.gguf SCRATCH_DIR */
#define _DEFAULT_SOURCE
#include "rs_engine.h"
#include "threadpool.h"

#include <math.h>
#include <stdatomic.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures = 0;
#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (!(cond)) {                                    \
            failures++;                                   \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                 \
            fprintf(stderr, "\n");                        \
        }                                                 \
    } while (0)

static unsigned char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)sz);
    if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return buf;
}

static void write_file(const char *path, const unsigned char *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(2); }
    if (n && fwrite(buf, 1, n, f) != n) { perror(path); exit(2); }
    fclose(f);
}

/* Opening this byte string must fail with `want` and a message. */
static void expect_open_fails(const char *dir, const unsigned char *buf, size_t n, int want,
                              const char *what) {
    char path[4096], err[512] = "";
    snprintf(path, sizeof path, "%s/bad.gguf", dir);
    write_file(path, buf, n);
    rs_model *m = NULL;
    int rc = rs_model_open(path, &m, err, sizeof err);
    CHECK(rc == want, "%s: open returned %d, want %d (%s)", what, rc, want, err);
    CHECK(m == NULL, "%s: model pointer set on failure", what);
    CHECK(strlen(err) > 0, "%s: no error message", what);
    printf("  %-34s -> %d: %s\n", what, rc, err);
}

static void test_bad_files(const char *model_path, const char *dir) {
    size_t n;
    unsigned char *buf = read_file(model_path, &n);
    CHECK(buf != NULL, "cannot read %s", model_path);
    if (!buf) return;
    char err[512];
    rs_model *m = NULL;
    CHECK(rs_model_open("/nonexistent/x.gguf", &m, err, sizeof err) == RS_ERR_IO, "missing file");
    CHECK(rs_model_open(dir, &m, err, sizeof err) == RS_ERR_IO, "a directory");
    expect_open_fails(dir, buf, 0, RS_ERR_FORMAT, "empty file");
    expect_open_fails(dir, (const unsigned char *)"not a gguf at all", 17, RS_ERR_FORMAT, "not a GGUF");
    size_t cuts[] = {4, 10, 23, 24, 100, 1000, 100000, 1000000, 1785600, n / 2, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        char what[64];
        snprintf(what, sizeof what, "truncated at %zu bytes", cuts[i]);
        expect_open_fails(dir, buf, cuts[i], RS_ERR_FORMAT, what);
    }
    /* version 1 */
    unsigned char *c = malloc(n);
    if (!c || n < 4096) {
        CHECK(0, "model file too small or out of memory");
        free(c);
        free(buf);
        return;
    }
    memcpy(c, buf, n);
    c[4] = 1;
    expect_open_fails(dir, c, 4096, RS_ERR_UNSUPPORTED, "GGUF version 1");
    /* absurd kv count */
    memcpy(c, buf, n);
    memset(c + 16, 0xff, 8);
    expect_open_fails(dir, c, n, RS_ERR_FORMAT, "huge metadata count");
    /* first key length corrupted to a huge value */
    memcpy(c, buf, n);
    memset(c + 24, 0x7f, 8);
    expect_open_fails(dir, c, n, RS_ERR_FORMAT, "huge key length");
    free(c);
    free(buf);
}

static int run(rs_model *m, rs_kv *kv, const int32_t *tok, int nt, int start, const int32_t *pages,
               int np, int all, float *out, char *err) {
    rs_seq s = {0, nt, start, 0, np, 1};
    return rs_forward(m, kv, tok, nt, &s, 1, pages, np, all, out, err, 512);
}

static void test_forward(const char *model_path) {
    char err[512];
    rs_model *m = NULL;
    int rc = rs_model_open(model_path, &m, err, sizeof err);
    CHECK(rc == 0, "open model: %s", err);
    if (rc) return;
    rs_hparams hp;
    rs_model_hparams(m, &hp);
    printf("  model: vocab %d, embd %d, layers %d, heads %d/%d, kernels %s\n", hp.n_vocab, hp.n_embd,
           hp.n_layer, hp.n_head, hp.n_head_kv, rs_model_kernels(m));
    rs_kv *kv = NULL;
    CHECK(rs_kv_create(m, 0, 16, RS_KV_F16, &kv, err, sizeof err) == RS_ERR_ARG, "zero pages accepted");
    CHECK(rs_kv_create(m, 4, 16, 7, &kv, err, sizeof err) == RS_ERR_ARG, "bad dtype accepted");
    rc = rs_kv_create(m, 8, 4, RS_KV_F16, &kv, err, sizeof err);
    CHECK(rc == 0, "kv create: %s", err);
    if (rc) { rs_model_free(m); return; }
    CHECK(rs_kv_copy_page(kv, 0, 8, err, sizeof err) == RS_ERR_ARG, "copy to page 8 of 8");
    CHECK(rs_kv_copy_page(kv, -1, 0, err, sizeof err) == RS_ERR_ARG, "copy from page -1");

    int32_t tok[7] = {504, 3575, 282, 4649, 314, 30, 198};
    int32_t pages[2] = {3, 5};
    int V = hp.n_vocab;
    float *whole = malloc(sizeof(float) * (size_t)V * 7);
    float *part = malloc(sizeof(float) * (size_t)V * 7);
    rc = run(m, kv, tok, 7, 0, pages, 2, 1, whole, err);
    CHECK(rc == 0, "forward: %s", err);
    int finite = 1;
    for (size_t i = 0; i < (size_t)V * 7; i++) finite &= isfinite(whole[i]) != 0;
    CHECK(finite, "non-finite logits");
    /* the same prompt in chunks 3 + 1 + 3, then the logits must be bit-identical */
    CHECK(run(m, kv, tok, 3, 0, pages, 1, 1, part, err) == 0, "chunk 1: %s", err);
    CHECK(run(m, kv, tok + 3, 1, 3, pages, 1, 1, part + (size_t)V * 3, err) == 0, "chunk 2: %s", err);
    CHECK(run(m, kv, tok + 4, 3, 4, pages, 2, 1, part + (size_t)V * 4, err) == 0, "chunk 3: %s", err);
    CHECK(memcmp(whole, part, sizeof(float) * (size_t)V * 7) == 0, "chunked logits differ from whole-prompt logits");
    /* a different thread count changes nothing */
    CHECK(rs_model_set_threads(m, 3, err, sizeof err) == 0, "threads: %s", err);
    CHECK(run(m, kv, tok, 7, 0, pages, 2, 1, part, err) == 0, "forward (3 threads): %s", err);
    CHECK(memcmp(whole, part, sizeof(float) * (size_t)V * 7) == 0, "logits change with the thread count");
    CHECK(rs_model_set_threads(m, 0, err, sizeof err) == RS_ERR_ARG, "0 threads accepted");

    /* argument errors: each is refused with a message and writes nothing */
    int32_t bad_tok[1] = {hp.n_vocab};
    CHECK(run(m, kv, bad_tok, 1, 0, pages, 1, 0, part, err) == RS_ERR_ARG && strstr(err, "vocabulary"),
          "token id == n_vocab: %s", err);
    int32_t neg_tok[1] = {-1};
    CHECK(run(m, kv, neg_tok, 1, 0, pages, 1, 0, part, err) == RS_ERR_ARG, "negative token");
    int32_t bad_pages[2] = {3, 8};
    CHECK(run(m, kv, tok, 7, 0, bad_pages, 2, 0, part, err) == RS_ERR_ARG && strstr(err, "page id"),
          "page id 8 of 8: %s", err);
    CHECK(run(m, kv, tok, 7, 0, pages, 1, 0, part, err) == RS_ERR_ARG, "page table too short");
    CHECK(run(m, kv, tok, 1, hp.n_ctx_train, pages, 2, 0, part, err) == RS_ERR_ARG && strstr(err, "context"),
          "position beyond context: %s", err);
    CHECK(run(m, kv, tok, 1, -1, pages, 2, 0, part, err) == RS_ERR_ARG, "negative position");
    CHECK(run(m, kv, tok, 0, 0, pages, 2, 0, part, err) == RS_ERR_ARG, "empty sequence");
    free(whole);
    free(part);
    rs_kv_free(kv);

    /* across attention chunks (512 positions): 520 tokens prefilled by 3
     * threads, then one more decoded by 3 and by 1, the same bits */
    enum { NL = 520, NLP = (NL + 1 + 15) / 16 };
    rs_kv *kv2;
    CHECK(rs_kv_create(m, NLP, 16, RS_KV_F16, &kv2, err, sizeof err) == 0, "kv create: %s", err);
    int32_t *ltok = malloc(sizeof(int32_t) * NL), lpages[NLP];
    for (int i = 0; i < NL; i++) ltok[i] = (int32_t)((i * 7919 + 13) % hp.n_vocab);
    for (int i = 0; i < NLP; i++) lpages[i] = i;
    float *a = malloc(sizeof(float) * (size_t)V), *b = malloc(sizeof(float) * (size_t)V);
    CHECK(rs_model_set_threads(m, 3, err, sizeof err) == 0, "threads: %s", err);
    CHECK(run(m, kv2, ltok, NL, 0, lpages, NLP, 0, a, err) == 0, "long prefill: %s", err);
    int32_t next = 42;
    CHECK(run(m, kv2, &next, 1, NL, lpages, NLP, 0, a, err) == 0, "decode at %d (3 threads): %s", NL, err);
    CHECK(rs_model_set_threads(m, 1, err, sizeof err) == 0, "threads: %s", err);
    CHECK(run(m, kv2, &next, 1, NL, lpages, NLP, 0, b, err) == 0, "decode at %d (1 thread): %s", NL, err);
    CHECK(memcmp(a, b, sizeof(float) * (size_t)V) == 0, "decode over two attention chunks changes with threads");
    free(ltok), free(a), free(b);
    rs_kv_free(kv2);
    rs_model_free(m);
}

/* ---- thread pool: each task exactly once, whoever runs it ---- */

typedef struct {
    atomic_int *runs;
    atomic_int by_other; /* tasks of thread 0's share run by another thread */
    int n_tasks, n_threads, slow_thread;
    long slow_ns;   /* how long the slow thread takes per task (0: 200 us) */
    long caller_ns; /* how long the caller (thread 0) takes per task, when it is not the slow one */
} pool_ctx;

static void pool_task(void *ctx, int task, int thread) {
    pool_ctx *c = ctx;
    atomic_fetch_add(&c->runs[task], 1);
    int share0_end = (int)((long)c->n_tasks / c->n_threads);
    if (thread != 0 && task < share0_end) atomic_fetch_add(&c->by_other, 1);
    if (thread == c->slow_thread) { /* a descheduled thread: the others must steal its share */
        struct timespec ts = {0, c->slow_ns ? c->slow_ns : 200000};
        nanosleep(&ts, NULL);
    } else if (thread == 0 && c->caller_ns) {
        struct timespec ts = {0, c->caller_ns};
        nanosleep(&ts, NULL);
    }
}

static void test_pool(void) {
    static const int sizes[] = {1, 2, 3, 5, 17, 64, 1000};
    for (int nth = 1; nth <= 4; nth++) {
        rs_pool *p;
        CHECK(rs_pool_create(nth, &p) == 0, "pool of %d threads", nth);
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            for (int slow = -1; slow < nth; slow += nth) { /* no slow thread, then the last one slow */
                int n = sizes[si];
                pool_ctx c = {.n_tasks = n, .n_threads = nth, .slow_thread = slow};
                c.runs = calloc((size_t)n, sizeof *c.runs);
                atomic_init(&c.by_other, 0);
                for (int rep = 0; rep < 3; rep++) rs_pool_run(p, n, pool_task, &c);
                int bad = 0;
                for (int t = 0; t < n; t++) bad += atomic_load(&c.runs[t]) != 3;
                CHECK(bad == 0, "%d threads, %d tasks: %d tasks not run exactly once per job", nth, n, bad);
                free(c.runs);
            }
        }
        rs_pool_free(p);
    }
    /* the caller (thread 0) sleeps in every task: the worker finishes its
     * own share and then steals from the caller's */
    rs_pool *p;
    CHECK(rs_pool_create(2, &p) == 0, "pool of 2 threads");
    pool_ctx c = {.n_tasks = 200, .n_threads = 2, .slow_thread = 0};
    c.runs = calloc(200, sizeof *c.runs);
    atomic_init(&c.by_other, 0);
    rs_pool_run(p, 200, pool_task, &c);
    CHECK(atomic_load(&c.by_other) > 0, "no task of a slow caller's share was stolen");
    free(c.runs);
    rs_pool_free(p);
}

/* Sleeping and waking: idle gaps long enough that the workers go to sleep
 * (spin, yield, then the condition variable) before the next job, and jobs
 * started at once whose worker is slow enough that the caller sleeps
 * waiting for it. No
 * wake-up may be lost (the alarm ends the run if one is: it would hang)
 * and every task still runs once. */
static void test_pool_sleep(void) {
    alarm(120);
    for (int nth = 2; nth <= 3; nth++) {
        rs_pool *p;
        CHECK(rs_pool_create(nth, &p) == 0, "pool of %d threads", nth);
        for (int rep = 0; rep < 12; rep++) {
            if (rep % 2 == 0) { /* the workers fall asleep */
                struct timespec gap = {0, 20 * 1000000L};
                nanosleep(&gap, NULL);
            } /* else they spin and take their first task at once: the caller waits for a slow one */
            int n = 2 * nth;
            /* odd reps: the caller's tasks take 1 ms, time for worker 1 to
             * claim one of its own, which takes 5 ms */
            pool_ctx c = {.n_tasks = n, .n_threads = nth, .slow_thread = rep % 2 ? 1 : -1, .slow_ns = 5000000L,
                          .caller_ns = rep % 2 ? 1000000L : 0};
            c.runs = calloc((size_t)n, sizeof *c.runs);
            atomic_init(&c.by_other, 0);
            rs_pool_run(p, n, pool_task, &c);
            int bad = 0;
            for (int t = 0; t < n; t++) bad += atomic_load(&c.runs[t]) != 1;
            CHECK(bad == 0, "%d threads, after sleeping: %d tasks not run exactly once", nth, bad);
            free(c.runs);
        }
        rs_pool_free(p);
    }
    alarm(0);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.gguf SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    printf("bad files:\n");
    test_bad_files(argv[1], argv[2]);
    printf("forward:\n");
    test_forward(argv[1]);
    printf("thread pool:\n");
    test_pool();
    test_pool_sleep();
    printf(failures ? "test_engine: %d FAILED\n" : "test_engine: all passed\n", failures);
    return failures ? 1 : 0;
}
