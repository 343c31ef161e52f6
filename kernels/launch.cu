/* launch.cu: the switch for overlapping launches (programmatic dependent
 * launch, common.cuh's launch() and after_previous()). Process-wide: the
 * backends of several GPUs of one host share it, and every GPU of a host is
 * of one kind here. */
#include "common.cuh"

int mm_k_overlap_mode = MM_K_OVERLAP_NONE;

extern "C" enum mm_k_overlap mm_k_set_overlap(enum mm_k_overlap mode)
{
    int dev = 0, major = 0;
    if (mode != MM_K_OVERLAP_NONE &&
        (cudaGetDevice(&dev) != cudaSuccess ||
         cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
         major < 9))
        mode = MM_K_OVERLAP_NONE;
    mm_k_overlap_mode = mode;
    return mode;
}
