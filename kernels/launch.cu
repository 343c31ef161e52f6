/* launch.cu: the switch for overlapping launches (programmatic dependent
 * launch, common.cuh's launch() and after_previous()). Process-wide: the
 * backends of several GPUs of one host share it, and every GPU of a host is
 * of one kind here. */
#include "common.cuh"

bool mm_k_overlap_on = false;

extern "C" bool mm_k_set_overlap(bool on)
{
    int dev = 0, major = 0;
    if (on && (cudaGetDevice(&dev) != cudaSuccess ||
               cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) !=
                   cudaSuccess))
        on = false;
    mm_k_overlap_on = on && major >= 9;
    return mm_k_overlap_on;
}
