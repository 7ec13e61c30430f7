/* Byte-scanning kernels of smtpkit's hot path, used by _speedups.pyx.
 *
 * Three builds of the same few primitives, each working on a 64-byte block:
 *
 *   SSE2    x86-64, where SSE2 is baseline; GCC, Clang, MSVC
 *   NEON    AArch64 (Linux, macOS, Windows on Arm) and little-endian 32-bit ARM NEON
 *   scalar  anything else, and any build with -DSMTPKIT_NO_SIMD (to test this path on a
 *           machine that has SIMD: CFLAGS=-DSMTPKIT_NO_SIMD pip install ...)
 *
 * The kernels built on the primitives (the DATA encoder and the reply-line scanner) are
 * written once, so the three builds share all of their logic. The DATA encoder's main
 * kernel (_hotpath_encode.h) is also built for AVX2 on x86-64 with GCC or Clang, and
 * chosen at run time when the CPU has it (sk_encode_init).
 *
 * Memory rules every kernel keeps (checked with ASan and UBSan):
 *   - no load outside the input p[0..n): a block is only loaded where all its 64 bytes
 *     lie inside; tails go byte by byte, or load the block that ends exactly at p + n;
 *   - the encoder stores whole blocks past its output position: its output buffer needs
 *     SK_OUT_SLACK bytes beyond the worst-case output size (see sk_encode).
 *
 * The header does not need Python.h, so that a C test harness can compile it alone;
 * included after Python.h, it uses Python's own Py_ssize_t.
 */

#ifndef SMTPKIT_HOTPATH_H
#define SMTPKIT_HOTPATH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef Py_PYTHON_H
typedef ptrdiff_t Py_ssize_t;
#endif

#if defined(SMTPKIT_NO_SIMD)
#  define SK_SCALAR 1
#  define SK_SIMD_NAME "scalar"
#elif defined(__SSE2__) || defined(_M_X64) || defined(_M_AMD64)
#  define SK_SSE2 1
#  define SK_SIMD_NAME "sse2"
#  include <emmintrin.h>
#elif (defined(__ARM_NEON) || defined(__aarch64__) || defined(_M_ARM64)) && !defined(__ARM_BIG_ENDIAN)
#  define SK_NEON 1
#  define SK_SIMD_NAME "neon"
#  include <arm_neon.h>
#else
#  define SK_SCALAR 1
#  define SK_SIMD_NAME "scalar"
#endif

#if defined(_MSC_VER) && !defined(__clang__)
#  include <intrin.h>
#  define SK_INLINE static __forceinline
#  define SK_UNLIKELY(x) (x)
#  define SK_LIKELY(x) (x)
#else
#  define SK_INLINE static inline __attribute__((always_inline))
#  define SK_UNLIKELY(x) __builtin_expect(!!(x), 0)
#  define SK_LIKELY(x) __builtin_expect(!!(x), 1)
#endif

static const char sk_simd_name[] = SK_SIMD_NAME;

/* Index of the lowest set bit; x must not be 0. */
SK_INLINE unsigned sk_ctz64(uint64_t x)
{
#if defined(_MSC_VER) && !defined(__clang__)
    unsigned long i;
#  if defined(_M_X64) || defined(_M_AMD64) || defined(_M_ARM64)
    _BitScanForward64(&i, x);
    return (unsigned)i;
#  else /* 32-bit MSVC: no 64-bit scan */
    if ((uint32_t)x) {
        _BitScanForward(&i, (uint32_t)x);
        return (unsigned)i;
    }
    _BitScanForward(&i, (uint32_t)(x >> 32));
    return 32 + (unsigned)i;
#  endif
#else
    return (unsigned)__builtin_ctzll(x);
#endif
}

/* ------------------------------------------------------------------------------------
 * Primitives (a "mask" has bit k set for byte s[k])
 *
 *   sk_low64(s)          mask of the bytes s[0..64) that are <= 13
 *   sk_copy_low64(d, s)  the same, and copy those 64 bytes to d
 *   sk_copy64(d, s)      copy 64 bytes
 *   sk_ctl64(s)          mask of the bytes s[0..64) that are control characters other
 *                        than TAB (< 0x20, or 0x7F)
 *
 * "<= 13" is the cheap superset of the three bytes the encoder acts on, NUL (0), LF (10)
 * and CR (13): one unsigned min and one compare per vector. The other bytes it lets
 * through (TAB and rarer control characters) cost a look and are passed on unchanged.
 * ------------------------------------------------------------------------------------ */

#define SK_BLOCK 64

#if defined(SK_SSE2)

/* 0xFF in each byte <= 13: min(v, 13) == v */
#define SK_SSE2_LOW(v, k13) _mm_cmpeq_epi8(_mm_min_epu8((v), (k13)), (v))
#define SK_SSE2_BITS(v) ((uint64_t)(unsigned)_mm_movemask_epi8(v))

SK_INLINE uint64_t sk_low64(const unsigned char *s)
{
    const __m128i k13 = _mm_set1_epi8(13);
    __m128i a = _mm_loadu_si128((const __m128i *)s);
    __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
    __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
    __m128i d = _mm_loadu_si128((const __m128i *)(s + 48));
    return SK_SSE2_BITS(SK_SSE2_LOW(a, k13)) | SK_SSE2_BITS(SK_SSE2_LOW(b, k13)) << 16 |
           SK_SSE2_BITS(SK_SSE2_LOW(c, k13)) << 32 | SK_SSE2_BITS(SK_SSE2_LOW(d, k13)) << 48;
}

SK_INLINE uint64_t sk_copy_low64(unsigned char *dst, const unsigned char *s)
{
    const __m128i k13 = _mm_set1_epi8(13);
    __m128i a = _mm_loadu_si128((const __m128i *)s);
    __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
    __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
    __m128i d = _mm_loadu_si128((const __m128i *)(s + 48));
    _mm_storeu_si128((__m128i *)dst, a);
    _mm_storeu_si128((__m128i *)(dst + 16), b);
    _mm_storeu_si128((__m128i *)(dst + 32), c);
    _mm_storeu_si128((__m128i *)(dst + 48), d);
    return SK_SSE2_BITS(SK_SSE2_LOW(a, k13)) | SK_SSE2_BITS(SK_SSE2_LOW(b, k13)) << 16 |
           SK_SSE2_BITS(SK_SSE2_LOW(c, k13)) << 32 | SK_SSE2_BITS(SK_SSE2_LOW(d, k13)) << 48;
}

SK_INLINE void sk_copy64(unsigned char *dst, const unsigned char *s)
{
    __m128i a = _mm_loadu_si128((const __m128i *)s);
    __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
    __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
    __m128i d = _mm_loadu_si128((const __m128i *)(s + 48));
    _mm_storeu_si128((__m128i *)dst, a);
    _mm_storeu_si128((__m128i *)(dst + 16), b);
    _mm_storeu_si128((__m128i *)(dst + 32), c);
    _mm_storeu_si128((__m128i *)(dst + 48), d);
}

/* 0xFF in each control character other than TAB: (v <= 0x1F and v != TAB) or v == DEL */
SK_INLINE __m128i sk_sse2_ctl(__m128i v)
{
    __m128i low = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1F)), v);
    __m128i tab = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x09));
    __m128i del = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7F));
    return _mm_or_si128(_mm_andnot_si128(tab, low), del);
}

SK_INLINE uint64_t sk_ctl64(const unsigned char *s)
{
    __m128i a = _mm_loadu_si128((const __m128i *)s);
    __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
    __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
    __m128i d = _mm_loadu_si128((const __m128i *)(s + 48));
    return SK_SSE2_BITS(sk_sse2_ctl(a)) | SK_SSE2_BITS(sk_sse2_ctl(b)) << 16 |
           SK_SSE2_BITS(sk_sse2_ctl(c)) << 32 | SK_SSE2_BITS(sk_sse2_ctl(d)) << 48;
}

#elif defined(SK_NEON)

/* NEON has no movemask. For a whole block, weight each 0xFF/0x00 byte with its bit
 * (1, 2, 4, ... 128) and add neighbours pairwise three times: the 8 bytes left are the
 * 64-bit mask, byte k of the block in bit k. vpadd_u8 exists on ARMv7 and AArch64. */
SK_INLINE uint64_t sk_neon_bits64(uint8x16_t a, uint8x16_t b, uint8x16_t c, uint8x16_t d)
{
    static const uint8_t weights[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t w = vld1q_u8(weights);
    uint8x16_t aw = vandq_u8(a, w), bw = vandq_u8(b, w), cw = vandq_u8(c, w), dw = vandq_u8(d, w);
    uint8x8_t ta = vpadd_u8(vget_low_u8(aw), vget_high_u8(aw));
    uint8x8_t tb = vpadd_u8(vget_low_u8(bw), vget_high_u8(bw));
    uint8x8_t tc = vpadd_u8(vget_low_u8(cw), vget_high_u8(cw));
    uint8x8_t td = vpadd_u8(vget_low_u8(dw), vget_high_u8(dw));
    uint8x8_t r = vpadd_u8(vpadd_u8(ta, tb), vpadd_u8(tc, td));
    return vget_lane_u64(vreinterpret_u64_u8(r), 0);
}

SK_INLINE uint64_t sk_low64(const unsigned char *s)
{
    const uint8x16_t k13 = vdupq_n_u8(13);
    uint8x16_t a = vld1q_u8(s), b = vld1q_u8(s + 16), c = vld1q_u8(s + 32), d = vld1q_u8(s + 48);
    uint8x16_t m = vminq_u8(vminq_u8(a, b), vminq_u8(c, d));
    /* quick test first: most blocks of text have no byte <= 13 at all */
    if (vget_lane_u64(vreinterpret_u64_u8(vshrn_n_u16(vreinterpretq_u16_u8(vcleq_u8(m, k13)), 4)), 0) == 0)
        return 0;
    return sk_neon_bits64(vcleq_u8(a, k13), vcleq_u8(b, k13), vcleq_u8(c, k13), vcleq_u8(d, k13));
}

SK_INLINE uint64_t sk_copy_low64(unsigned char *dst, const unsigned char *s)
{
    const uint8x16_t k13 = vdupq_n_u8(13);
    uint8x16_t a = vld1q_u8(s), b = vld1q_u8(s + 16), c = vld1q_u8(s + 32), d = vld1q_u8(s + 48);
    uint8x16_t m;
    vst1q_u8(dst, a);
    vst1q_u8(dst + 16, b);
    vst1q_u8(dst + 32, c);
    vst1q_u8(dst + 48, d);
    m = vminq_u8(vminq_u8(a, b), vminq_u8(c, d));
    if (vget_lane_u64(vreinterpret_u64_u8(vshrn_n_u16(vreinterpretq_u16_u8(vcleq_u8(m, k13)), 4)), 0) == 0)
        return 0;
    return sk_neon_bits64(vcleq_u8(a, k13), vcleq_u8(b, k13), vcleq_u8(c, k13), vcleq_u8(d, k13));
}

SK_INLINE void sk_copy64(unsigned char *dst, const unsigned char *s)
{
    uint8x16_t a = vld1q_u8(s), b = vld1q_u8(s + 16), c = vld1q_u8(s + 32), d = vld1q_u8(s + 48);
    vst1q_u8(dst, a);
    vst1q_u8(dst + 16, b);
    vst1q_u8(dst + 32, c);
    vst1q_u8(dst + 48, d);
}

SK_INLINE uint8x16_t sk_neon_ctl(uint8x16_t v)
{
    uint8x16_t low = vcleq_u8(v, vdupq_n_u8(0x1F));
    uint8x16_t tab = vceqq_u8(v, vdupq_n_u8(0x09));
    uint8x16_t del = vceqq_u8(v, vdupq_n_u8(0x7F));
    return vorrq_u8(vbicq_u8(low, tab), del); /* (low & ~tab) | del */
}

SK_INLINE uint64_t sk_ctl64(const unsigned char *s)
{
    return sk_neon_bits64(sk_neon_ctl(vld1q_u8(s)), sk_neon_ctl(vld1q_u8(s + 16)),
                          sk_neon_ctl(vld1q_u8(s + 32)), sk_neon_ctl(vld1q_u8(s + 48)));
}

#else /* SK_SCALAR */

/* SWAR, 8 bytes at a time: (w - 0x0101..01 * k) & ~w & 0x8080..80 is non-zero iff some
 * byte of w is < k (k <= 128; exact as a yes/no test, whatever the byte order). A word
 * that has such a byte gets its 8 mask bits byte by byte; the others, most of any text,
 * cost a few operations. */
#define SK_ONES 0x0101010101010101ULL
#define SK_HIGHS 0x8080808080808080ULL
#define SK_HAS_LESS(w, k) (((w) - (k) * SK_ONES) & ~(w) & SK_HIGHS)

SK_INLINE uint64_t sk_low64(const unsigned char *s)
{
    uint64_t w, mask = 0;
    int k, j;
    for (k = 0; k < 64; k += 8) {
        memcpy(&w, s + k, 8);
        if (SK_HAS_LESS(w, 14))
            for (j = k; j < k + 8; j++)
                mask |= (uint64_t)(s[j] <= 13) << j;
    }
    return mask;
}

SK_INLINE uint64_t sk_copy_low64(unsigned char *dst, const unsigned char *s)
{
    memcpy(dst, s, 64);
    return sk_low64(s);
}

SK_INLINE void sk_copy64(unsigned char *dst, const unsigned char *s) { memcpy(dst, s, 64); }

SK_INLINE uint64_t sk_ctl64(const unsigned char *s)
{
    uint64_t w, mask = 0;
    int k, j;
    for (k = 0; k < 64; k += 8) {
        memcpy(&w, s + k, 8);
        /* a byte < 0x20 (TAB included: sorted out below), or a 0x7F (zero after XOR) */
        if (SK_HAS_LESS(w, 0x20) | SK_HAS_LESS(w ^ (0x7F * SK_ONES), 1))
            for (j = k; j < k + 8; j++)
                mask |= (uint64_t)(((s[j] < 0x20) & (s[j] != 0x09)) | (s[j] == 0x7F)) << j;
    }
    return mask;
}

#endif

/* ------------------------------------------------------------------------------------
 * Reply lines
 * ------------------------------------------------------------------------------------ */

/* bitwise, not logical, operators: no branches */
SK_INLINE int sk_is_ctl(unsigned c) { return ((c < 0x20) & (c != 0x09)) | (c == 0x7F); }

enum { SK_MALFORMED = -1, SK_CODE_RANGE = -2 };

/* The code of a reply line of n bytes (line ending excluded): 200-599, or SK_MALFORMED
 * (not "DDD", "DDD SP ..." or "DDD-..."), or SK_CODE_RANGE (first digit not 2-5). */
SK_INLINE int sk_reply_code(const unsigned char *s, Py_ssize_t n)
{
    unsigned d0, d1, d2;
    if (n < 3)
        return SK_MALFORMED;
    d0 = s[0] - (unsigned)'0'; /* unsigned: anything below '0' wraps to a large value */
    d1 = s[1] - (unsigned)'0';
    d2 = s[2] - (unsigned)'0';
    if ((d0 > 9) | (d1 > 9) | (d2 > 9))
        return SK_MALFORMED;
    if (n > 3 && s[3] != ' ' && s[3] != '-')
        return SK_MALFORMED;
    if (d0 - 2 > 3)
        return SK_CODE_RANGE;
    return (int)(d0 * 100 + d1 * 10 + d2);
}

/* memcpy for the short strings of reply lines, without a library call: two overlapping
 * 8-byte (or 4-byte) moves cover any length from 4 to 16, never reading past s + k. */
SK_INLINE void sk_copy_short(unsigned char *d, const unsigned char *s, Py_ssize_t k)
{
    uint64_t a, b;
    uint32_t c, e;
    if (k > 16) {
        memcpy(d, s, (size_t)k);
    } else if (k >= 8) {
        memcpy(&a, s, 8);
        memcpy(&b, s + k - 8, 8);
        memcpy(d, &a, 8);
        memcpy(d + k - 8, &b, 8);
    } else if (k >= 4) {
        memcpy(&c, s, 4);
        memcpy(&e, s + k - 4, 4);
        memcpy(d, &c, 4);
        memcpy(d + k - 4, &e, 4);
    } else {
        while (k-- > 0)
            *d++ = *s++;
    }
}

/* Finds, in order, the control characters other than TAB of a chunk p[0..n).
 *
 * LF and CR are control characters, so on well-formed replies the ones found are the
 * line endings: the parser learns in one pass both where a line ends and that its text
 * is clean. The chunk is scanned 64 bytes at a time into a bit mask, and consecutive
 * short lines are then served from the mask with a shift and a count of trailing zeros,
 * instead of one vector loop (and one hard-to-predict loop exit) per line. */
typedef struct {
    const unsigned char *p;
    Py_ssize_t n;
    Py_ssize_t base; /* the mask describes p[base .. base + 64), cut at n */
    uint64_t mask;
} sk_ctl_iter;

SK_INLINE void sk_ctl_init(sk_ctl_iter *it, const unsigned char *p, Py_ssize_t n)
{
    it->p = p;
    it->n = n;
    it->base = -SK_BLOCK; /* describes nothing yet */
    it->mask = 0;
}

/* The mask for p[a .. a + 64) cut at n, read without leaving p[0..n). */
static uint64_t sk_ctl_block(const unsigned char *p, Py_ssize_t a, Py_ssize_t n)
{
    uint64_t mask = 0;
    Py_ssize_t k;
    if (n - a >= SK_BLOCK)
        return sk_ctl64(p + a);
    if (n >= SK_BLOCK) /* the block that ends at n, less the bytes before a */
        return sk_ctl64(p + n - SK_BLOCK) >> (a - (n - SK_BLOCK));
    for (k = a; k < n; k++) /* a chunk shorter than a block */
        mask |= (uint64_t)sk_is_ctl(p[k]) << (k - a);
    return mask;
}

/* Index of the first control character other than TAB in p[from..n), or n. Successive
 * calls must not go backwards (`from` at least the previous call's `from`). */
SK_INLINE Py_ssize_t sk_ctl_next(sk_ctl_iter *it, Py_ssize_t from)
{
    uint64_t m;
    for (;;) {
        if (from - it->base < SK_BLOCK) {
            m = it->mask >> (from - it->base);
            if (m)
                return from + sk_ctz64(m);
            from = it->base + SK_BLOCK;
        }
        if (from >= it->n)
            return it->n;
        it->base = from;
        it->mask = sk_ctl_block(it->p, from, it->n);
    }
}

/* The reply in progress: its code (0 before its first line), its size so far in bytes
 * and lines, and the text of its lines joined by LF in text[0..tlen) (capacity tcap). */
typedef struct {
    int code;
    Py_ssize_t nbytes;
    Py_ssize_t nlines;
    char *text;
    Py_ssize_t tlen;
    Py_ssize_t tcap;
} sk_reply_acc;

/* The fast path of one reply line: `size` bytes, `n` of them before the line ending, the
 * text known to hold no control character but TAB. Returns
 *   0      the line was added to a reply that goes on;
 *   code   (200-599) the line ended the reply: its text is msg[0..*mlen) (in the line
 *          itself or in acc->text, valid until the next call), and acc is reset;
 *   -1     the line was not taken, and acc is unchanged: it is faulty (bad code, mixed
 *          codes, over a limit) or the text buffer must grow first. The caller's full
 *          path handles it and reports the fault.
 * Inlined into the parsing loop, so that a line costs no function call. */
SK_INLINE int sk_reply_line(sk_reply_acc *acc, const unsigned char *line, Py_ssize_t n,
                            Py_ssize_t size, Py_ssize_t max_bytes, Py_ssize_t max_lines,
                            const char **msg, Py_ssize_t *mlen)
{
    int code = sk_reply_code(line, n);
    Py_ssize_t a, b;
    int last;
    if ((code < 0) | (acc->code != 0 && code != acc->code) | (acc->nbytes + size > max_bytes)
        | (acc->nlines >= max_lines))
        return -1;
    /* the text, stripped of spaces and tabs on both sides */
    a = n > 4 ? 4 : n;
    b = n;
    while (a < b && (line[a] == ' ' || line[a] == '\t'))
        a++;
    while (b > a && (line[b - 1] == ' ' || line[b - 1] == '\t'))
        b--;
    last = n == 3 || line[3] == ' ';
    if (last && acc->nlines == 0) { /* a one-line reply: its text is in the line */
        *msg = (const char *)line + a;
        *mlen = b - a;
        return code;
    }
    if (acc->tlen + (b - a) + 1 > acc->tcap)
        return -1;
    if (acc->nlines)
        acc->text[acc->tlen++] = '\n';
    sk_copy_short((unsigned char *)acc->text + acc->tlen, line + a, b - a);
    acc->tlen += b - a;
    if (last) {
        *msg = acc->text;
        *mlen = acc->tlen;
        acc->code = 0;
        acc->nbytes = 0;
        acc->nlines = 0;
        acc->tlen = 0;
        return code;
    }
    acc->code = code;
    acc->nbytes += size;
    acc->nlines++;
    return 0;
}

/* ------------------------------------------------------------------------------------
 * DATA encoder
 *
 * Rules (smtpkit/_speedups_py.py is the reference): CRLF, bare CR and bare LF each become
 * CRLF; a '.' starting a line is doubled; NUL is an error; so is a line longer than
 * `limit` bytes (pass a huge limit for "none"). Errors are reported for the first fault in
 * stream order: a NUL inside a line that is already too long reports the line.
 *
 * Positions are indexes into the chunk p[0..n). `ls` (start of the current line) may be
 * negative when the line began in an earlier chunk; a position equal to `ls` is at the
 * start of a line.
 * ------------------------------------------------------------------------------------ */

enum { SK_OK = 0, SK_NUL = 1, SK_LONG = 2 };

/* Output bytes that sk_encode may write beyond the end of its output (whole-block stores). */
#define SK_OUT_SLACK (SK_BLOCK + 16)

typedef struct {
    Py_ssize_t i;   /* next input byte */
    Py_ssize_t o;   /* next output byte */
    Py_ssize_t ls;  /* start of the current line */
    Py_ssize_t err; /* after an error: where it is (the NUL, or the long line's start) */
} sk_enc_state;

SK_INLINE int sk_is_break(unsigned c) { return c == '\r' || c == '\n'; }

/* Index of the first byte <= 13 in p[i..n), or n. */
SK_INLINE Py_ssize_t sk_find_low(const unsigned char *p, Py_ssize_t i, Py_ssize_t n)
{
    uint64_t m;
    for (; n - i >= SK_BLOCK; i += SK_BLOCK) {
        m = sk_low64(p + i);
        if (m)
            return i + sk_ctz64(m);
    }
    for (; i < n; i++)
        if (p[i] <= 13)
            return i;
    return n;
}

/* Phase 1, no output: advance st->i over the bytes that the encoding leaves as they are
 * (text, TABs, CRLF pairs not followed by a '.'), checking line lengths on the way. Stops
 * at the first byte to change or reject: a '.' starting a line, a bare CR or LF, a NUL, a
 * CR ending the chunk (it becomes CRLF here, whatever follows), or at n.
 * Returns SK_OK or SK_LONG (a line that is too long ends before that byte or at n). */
static int sk_encode_scan(const unsigned char *p, Py_ssize_t n, Py_ssize_t limit, sk_enc_state *st)
{
    Py_ssize_t i = st->i, ls = st->ls;
    unsigned c;
    for (;;) {
        if (i == ls && i < n && p[i] == '.')
            break;
        i = sk_find_low(p, i, n);
        if (i == n)
            break;
        c = p[i];
        if (!sk_is_break(c) && c != 0) { /* TAB and friends */
            i++;
            continue;
        }
        if (c != '\r' || i + 1 >= n || p[i + 1] != '\n')
            break;
        if (i - ls > limit) {
            st->err = ls;
            return SK_LONG;
        }
        i += 2;
        ls = i;
    }
    if (i == n && n - ls > limit) {
        st->err = ls;
        return SK_LONG;
    }
    st->i = i;
    st->ls = ls;
    return SK_OK;
}

/* 1 if s[0..2) is CR LF: one 16-bit load, compared with the same two bytes read the same
 * way (so whatever the byte order). */
SK_INLINE Py_ssize_t sk_is_crlf(const unsigned char *s)
{
    uint16_t w, crlf;
    memcpy(&w, s, 2);
    memcpy(&crlf, "\r\n", 2);
    return w == crlf;
}

/* Phase 2, the kernel (see _hotpath_encode.h): built once with this build's primitives,
 * and on x86-64 with GCC or Clang once more for AVX2, chosen at run time (sk_encode). */
#define SK_KFN sk_encode_base
#define SK_KATTR
#define SK_KCOPY_LOW64 sk_copy_low64
#define SK_KCOPY64 sk_copy64
#include "_hotpath_encode.h"

typedef int (*sk_encode_fn)(const unsigned char *, Py_ssize_t, Py_ssize_t, unsigned char *, sk_enc_state *);

/* The AVX2 kernel: the same code on 32-byte vectors, compiled for AVX2 (and BMI1/BMI2:
 * tzcnt, shrx) by a target attribute, so that the module itself still runs on any x86-64.
 * Not with MSVC (no target attributes, no __builtin_cpu_supports): SSE2 there. */
#if defined(SK_SSE2) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(_MSC_VER)
#  define SK_HAVE_AVX2 1
#  include <immintrin.h>
#  define SK_AVX2_ATTR __attribute__((target("avx2,bmi,bmi2")))

SK_AVX2_ATTR static inline __attribute__((always_inline)) uint64_t
sk_avx2_copy_low64(unsigned char *dst, const unsigned char *s)
{
    const __m256i k13 = _mm256_set1_epi8(13);
    __m256i a = _mm256_loadu_si256((const __m256i *)s);
    __m256i b = _mm256_loadu_si256((const __m256i *)(s + 32));
    _mm256_storeu_si256((__m256i *)dst, a);
    _mm256_storeu_si256((__m256i *)(dst + 32), b);
    return (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_min_epu8(a, k13), a)) |
           (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_min_epu8(b, k13), b)) << 32;
}

SK_AVX2_ATTR static inline __attribute__((always_inline)) void
sk_avx2_copy64(unsigned char *dst, const unsigned char *s)
{
    __m256i a = _mm256_loadu_si256((const __m256i *)s);
    __m256i b = _mm256_loadu_si256((const __m256i *)(s + 32));
    _mm256_storeu_si256((__m256i *)dst, a);
    _mm256_storeu_si256((__m256i *)(dst + 32), b);
}

#  define SK_KFN sk_encode_avx2
#  define SK_KATTR SK_AVX2_ATTR
#  define SK_KCOPY_LOW64 sk_avx2_copy_low64
#  define SK_KCOPY64 sk_avx2_copy64
#  include "_hotpath_encode.h"

static int sk_cpu_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi") &&
           __builtin_cpu_supports("bmi2");
}

/* The AVX-512BW kernel: a block is one 64-byte vector, and its mask of bytes <= 13 comes
 * straight out of one compare into a mask register (no movemask and merge of halves):
 * about a fifth fewer instructions per block than AVX2. Only 512-bit loads, stores and
 * compares, which do not lower the clock of the CPUs that have them. The runtime check
 * (__builtin_cpu_supports) includes the OS's saving of the AVX-512 state. */
#  define SK_AVX512_ATTR __attribute__((target("avx512f,avx512bw,bmi,bmi2")))

SK_AVX512_ATTR static inline __attribute__((always_inline)) uint64_t
sk_avx512_copy_low64(unsigned char *dst, const unsigned char *s)
{
    __m512i a = _mm512_loadu_si512((const void *)s);
    _mm512_storeu_si512((void *)dst, a);
    return (uint64_t)_mm512_cmple_epu8_mask(a, _mm512_set1_epi8(13));
}

SK_AVX512_ATTR static inline __attribute__((always_inline)) void
sk_avx512_copy64(unsigned char *dst, const unsigned char *s)
{
    _mm512_storeu_si512((void *)dst, _mm512_loadu_si512((const void *)s));
}

#  define SK_KFN sk_encode_avx512
#  define SK_KATTR SK_AVX512_ATTR
#  define SK_KCOPY_LOW64 sk_avx512_copy_low64
#  define SK_KCOPY64 sk_avx512_copy64
#  include "_hotpath_encode.h"

static int sk_cpu_has_avx512bw(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
}
#endif

/* The kernels this build has and this CPU runs, best last. */
static const char *sk_encode_names[4];
static sk_encode_fn sk_encode_fns[4];
static int sk_encode_count = 0;
static sk_encode_fn sk_encode_kernel = sk_encode_base;
static const char *sk_encode_kernel_name = SK_SIMD_NAME;

/* Fill the kernel table and choose the best; call once before sk_encode. */
static void sk_encode_init(void)
{
    sk_encode_count = 0;
    sk_encode_names[sk_encode_count] = SK_SIMD_NAME;
    sk_encode_fns[sk_encode_count++] = sk_encode_base;
#ifdef SK_HAVE_AVX2
    if (sk_cpu_has_avx2()) {
        sk_encode_names[sk_encode_count] = "avx2";
        sk_encode_fns[sk_encode_count++] = sk_encode_avx2;
    }
    if (sk_cpu_has_avx512bw()) {
        sk_encode_names[sk_encode_count] = "avx512";
        sk_encode_fns[sk_encode_count++] = sk_encode_avx512;
    }
#endif
    sk_encode_kernel = sk_encode_fns[sk_encode_count - 1];
    sk_encode_kernel_name = sk_encode_names[sk_encode_count - 1];
}

/* Use kernel k of the table (tests compare each with the pure twin). Returns 0, or -1
 * when there is no such kernel. */
static int sk_encode_use(int k)
{
    if (k < 0 || k >= sk_encode_count)
        return -1;
    sk_encode_kernel = sk_encode_fns[k];
    sk_encode_kernel_name = sk_encode_names[k];
    return 0;
}

static int sk_encode(const unsigned char *p, Py_ssize_t n, Py_ssize_t limit, unsigned char *out,
                     sk_enc_state *st)
{
    return sk_encode_kernel(p, n, limit, out, st);
}

#endif /* SMTPKIT_HOTPATH_H */
