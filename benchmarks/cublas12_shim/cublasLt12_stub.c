/* libcublasLt.so.12: libfaiss names it but calls nothing in it; cuBLAS 13's own Lt serves the shim. */
int cublasLt12_stub_present(void) { return 1; }
