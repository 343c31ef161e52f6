/* cuda_measure.c: the device's ceilings for `mmmamba bench` (see
 * cuda_backend.h): a streaming read of a buffer many times the L2 and the
 * cuBLASLt bf16 GEMM rate at 8192^3 on random data, measured in the same run
 * as the figures they are compared with. Independent of the backend's state. */
#include "engine/cuda_backend.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "kernels.h"

enum mm_status mm_cuda_measure(double *read_tbs, double *gemm_tflops, struct mm_err *err)
{
    const size_t bytes = (size_t)4 << 30, n = 8192;
    void *buf = NULL, *a = NULL, *b = NULL, *d = NULL, *ws = NULL;
    float *sink = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    cublasLtHandle_t lt = NULL;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    enum mm_status st = MM_ERR_BACKEND;
    const size_t ws_bytes = (size_t)32 << 20;
    float ms = 0;
    int n_dev = 0;
    const cudaError_t de = cudaGetDeviceCount(&n_dev);
    if (de != cudaSuccess || n_dev < 1) {
        (void)cudaGetLastError();
        return mm_err_set(err, MM_ERR_UNSUPPORTED, "no CUDA device (%s)",
                          de != cudaSuccess ? cudaGetErrorName(de) : "none found");
    }
    if (cudaMalloc(&buf, bytes) != cudaSuccess || cudaMalloc((void **)&sink, 4) != cudaSuccess ||
        cudaMalloc(&a, n * n * 2) != cudaSuccess || cudaMalloc(&b, n * n * 2) != cudaSuccess ||
        cudaMalloc(&d, n * n * 2) != cudaSuccess || cudaMalloc(&ws, ws_bytes) != cudaSuccess ||
        cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess) {
        mm_err_set(err, MM_ERR_BACKEND, "measure: %s", cudaGetErrorName(cudaGetLastError()));
        goto done;
    }
    /* read: a 4 GiB buffer (66x the L2), median-free best of 10 after a warm-up */
    mm_k_fill_random(0, buf, (int64_t)(bytes / 2), 1);
    double best = 0;
    for (int r = 0; r < 11; r++) {
        cudaEventRecord(e0, 0);
        mm_k_read_stream(0, buf, (int64_t)(bytes / 16), sink);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        cudaEventElapsedTime(&ms, e0, e1);
        if (r > 0 && (double)bytes / (ms * 1e-3) > best)
            best = (double)bytes / (ms * 1e-3);
    }
    *read_tbs = best / 1e12;
    /* GEMM: 8192^3 bf16 in, fp32 accumulate, random data; mean of 10 after 3 warm-ups */
    mm_k_fill_random(0, a, (int64_t)(n * n), 2);
    mm_k_fill_random(0, b, (int64_t)(n * n), 3);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, n, n, (int64_t)n) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &ws_bytes, sizeof ws_bytes) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulAlgoGetHeuristic(lt, op, la, la, la, la, pref, 1, &res, &found) !=
            CUBLAS_STATUS_SUCCESS ||
        found < 1) {
        mm_err_set(err, MM_ERR_BACKEND, "measure: cuBLASLt setup failed");
        goto done;
    }
    const float alpha = 1, beta = 0;
    for (int r = 0; r < 13; r++) {
        if (r == 3)
            cudaEventRecord(e0, 0);
        cublasLtMatmul(lt, op, &alpha, a, la, b, la, &beta, d, la, d, la, &res.algo, ws, ws_bytes,
                       0);
    }
    cudaEventRecord(e1, 0);
    cudaEventSynchronize(e1);
    cudaEventElapsedTime(&ms, e0, e1);
    *gemm_tflops = 2.0 * (double)n * n * n * 10 / (ms * 1e-3) / 1e12;
    st = cudaGetLastError() == cudaSuccess
             ? MM_OK
             : mm_err_set(err, MM_ERR_BACKEND, "measure: %s", cudaGetErrorName(cudaGetLastError()));
done:
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (la)
        cublasLtMatrixLayoutDestroy(la);
    if (op)
        cublasLtMatmulDescDestroy(op);
    if (lt)
        cublasLtDestroy(lt);
    if (e0)
        cudaEventDestroy(e0);
    if (e1)
        cudaEventDestroy(e1);
    cudaFree(buf);
    cudaFree(sink);
    cudaFree(a);
    cudaFree(b);
    cudaFree(d);
    cudaFree(ws);
    return st;
}
