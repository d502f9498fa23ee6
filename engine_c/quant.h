/* Block formats of the GGUF tensor types we read, and half/bfloat conversions.
 * Layouts are ggml's, byte for byte (the file is mapped, never converted). */
#ifndef RS_QUANT_H
#define RS_QUANT_H

#include <stdint.h>
#include <string.h>

#define RS_QK 32 /* elements per quantized block, for every type below */

/* Q4_0: x = d * (q - 8), q in 0..15; element j<16 in the low nibble of
 * qs[j], element j+16 in the high nibble of qs[j]. */
typedef struct { uint16_t d; uint8_t qs[RS_QK / 2]; } rs_block_q4_0;
/* Q4_1: x = d * q + m, same nibble order. */
typedef struct { uint16_t d; uint16_t m; uint8_t qs[RS_QK / 2]; } rs_block_q4_1;
/* Q8_0: x = d * q. */
typedef struct { uint16_t d; int8_t qs[RS_QK]; } rs_block_q8_0;

/* Activations quantized for integer dot products (ours, not a file format):
 * x ~= d * q with q in [-32767, 32767], and s = d * sum(q) so Q4_1's offset m
 * costs one multiply. 16 bits, not llama.cpp's 8: int8 activations put the
 * bundled model's logits ~4% (of their range) away from a float64 forward,
 * int16 ones ~0.01%, and 16x16-bit multiply-adds (pmaddwd) keep the integer
 * speed. Weight x activation products of a block fit int32 for every type. */
typedef struct { float d; float s; int16_t qs[RS_QK]; } rs_block_q16;

_Static_assert(sizeof(rs_block_q4_0) == 18, "q4_0 block");
_Static_assert(sizeof(rs_block_q4_1) == 20, "q4_1 block");
_Static_assert(sizeof(rs_block_q8_0) == 34, "q8_0 block");
_Static_assert(sizeof(rs_block_q16) == 72, "q16 block");

/* IEEE half <-> float, exact for every half (scalar reference; SIMD files
 * use F16C / NEON conversions, which are exact too). */
static inline float rs_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400u));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Round to nearest even, as F16C's _cvtps_ph(.., 0) and NEON's vcvt do. */
static inline uint16_t rs_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0));
    if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (absx < 0x38800000u) { /* result is subnormal or zero */
        if (absx < 0x33000000u) return (uint16_t)sign; /* < 2^-25: rounds to 0 */
        uint32_t e = absx >> 23;
        uint32_t man = (absx & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t r = absx + 0xfffu + ((absx >> 13) & 1u); /* round to nearest even */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

static inline float rs_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

#endif
