/* The instruction set of the fused CPU loops (painn_kernels.cpp, efa_kernels.cpp): each is
 * compiled as a generic, an AVX2 + FMA and an AVX-512 clone, and one choice, made once per
 * process, picks the clone of every loop.
 */
#ifndef MLIP_ATTN_KERNEL_ISA_H
#define MLIP_ATTN_KERNEL_ISA_H

#if defined(__x86_64__) && defined(__GNUC__)
#define MLIP_ATTN_X86_CLONES 1
#define MLIP_ATTN_AVX2 __attribute__((target("avx2,fma")))
#define MLIP_ATTN_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma")))
#endif

namespace mlip_attn_kernels {

enum class Isa { generic, avx2, avx512 };

// The best clone the CPU supports, or a lesser one named by MLIP_ATTN_KERNEL_ISA ("avx2",
// "generic": how the tests run every clone on one machine); never one the CPU lacks. Decided
// at the first call (painn_kernels.cpp).
Isa kernel_isa();

}    // namespace mlip_attn_kernels

#endif
