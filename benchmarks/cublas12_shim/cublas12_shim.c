/* libcublas.so.12 for faiss-gpu-cu12 on a machine that has only cuBLAS 13 (a CUDA 13 image): the eight
 * cuBLAS calls that faiss 1.14's libfaiss makes, each forwarded to the same function of libcublas.so.13
 * (loaded privately with dlopen, so these definitions never call themselves). Their C signatures are
 * unchanged from cuBLAS 12 to 13; the enums are ints. Built on the GPU machine by
 * benchmarks/device_faiss_gpu.sh when the (large) nvidia-cublas-cu12 wheel was not carried. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef int status_t;
typedef long long int i64;

static void *real(const char *name) {
    static void *lib = NULL;
    if (lib == NULL) {
        const char *path = getenv("CUBLAS13_LIBRARY");
        lib = dlopen(path ? path : "libcublas.so.13", RTLD_NOW | RTLD_LOCAL);
        if (lib == NULL) {
            fprintf(stderr, "error: cublas12 shim: %s\n", dlerror());
            abort();
        }
    }
    void *fn = dlsym(lib, name);
    if (fn == NULL) {
        fprintf(stderr, "error: cublas12 shim: libcublas.so.13 has no %s\n", name);
        abort();
    }
    return fn;
}

#define FORWARD(name, params, args)                         \
    status_t name params {                                  \
        static status_t(*fn) params = NULL;                 \
        if (fn == NULL) fn = (status_t(*) params)real(#name); \
        return fn args;                                     \
    }

FORWARD(cublasCreate_v2, (void **handle), (handle))
FORWARD(cublasDestroy_v2, (void *handle), (handle))
FORWARD(cublasSetStream_v2, (void *handle, void *stream), (handle, stream))
FORWARD(cublasGetMathMode, (void *handle, int *mode), (handle, mode))
FORWARD(cublasSetMathMode, (void *handle, int mode), (handle, mode))
FORWARD(cublasSgemmEx,
        (void *h, int ta, int tb, int m, int n, int k, const float *alpha, const void *A, int at, int lda,
         const void *B, int bt, int ldb, const float *beta, void *C, int ct, int ldc),
        (h, ta, tb, m, n, k, alpha, A, at, lda, B, bt, ldb, beta, C, ct, ldc))
FORWARD(cublasGemmEx,
        (void *h, int ta, int tb, int m, int n, int k, const void *alpha, const void *A, int at, int lda,
         const void *B, int bt, int ldb, const void *beta, void *C, int ct, int ldc, int compute, int algo),
        (h, ta, tb, m, n, k, alpha, A, at, lda, B, bt, ldb, beta, C, ct, ldc, compute, algo))
FORWARD(cublasGemmStridedBatchedEx,
        (void *h, int ta, int tb, int m, int n, int k, const void *alpha, const void *A, int at, int lda,
         i64 sa, const void *B, int bt, int ldb, i64 sb, const void *beta, void *C, int ct, int ldc, i64 sc,
         int batch, int compute, int algo),
        (h, ta, tb, m, n, k, alpha, A, at, lda, sa, B, bt, ldb, sb, beta, C, ct, ldc, sc, batch, compute, algo))
