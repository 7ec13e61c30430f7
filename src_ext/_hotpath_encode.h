/* The DATA encoder's kernel, included by _hotpath.h once per instruction set it is built
 * for (no include guard: that is the point). Before each inclusion _hotpath.h defines:
 *
 *   SK_KFN               the function's name
 *   SK_KATTR             attributes that go before it (a target attribute, or nothing)
 *   SK_KCOPY_LOW64(d,s)  copy the 64 bytes at s to d; return the mask of those <= 13
 *   SK_KCOPY64(d,s)      copy the 64 bytes at s to d
 *
 * and they are undefined again at the end of this file.
 *
 * Phase 2 of the encoder: encode p[st->i..n) to out + st->o. Returns SK_OK (st->o is then
 * the output length), SK_NUL or SK_LONG (st->err says where).
 *
 * out must have room for st->o + 2 * (n - st->i) + SK_OUT_SLACK bytes: every input byte
 * gives at most two output bytes, and block stores run up to SK_OUT_SLACK bytes ahead.
 *
 * The main loop reads the input in blocks of 64 bytes at a fixed stride. `os` maps input
 * to output: input byte k goes to os[k] (os = out + shift, shift growing by one for each
 * bare CR or LF and each stuffed dot):
 *
 *  1. each block is stored to os + i unconditionally, as if it held nothing to change,
 *     while its mask of bytes <= 13 is computed; usually that mask is empty or has a
 *     single line break (mail lines are longer than a block is). The fast path serves
 *     the single break in straight-line code: one 4-byte store "\r\n.." over the break
 *     (the CR LF, and the stuffed dot, kept only when the next line starts with '.'), a
 *     new `os`, and the 64 bytes that follow the break stored again at their new place.
 *     Each break costs the same whether it was CRLF, CR or LF and whether a dot follows.
 *  2. any other block (two breaks or more, a NUL or other control byte <= 13, a CRLF
 *     split by the block's end, a line over the limit) goes through the general loop,
 *     break by break; it finds every fault the fast path leaves to it.
 *
 * The input position advances by a constant, so the loads of the next block never wait
 * for the fix-ups of this one. Bytes stored past the current output position are garbage
 * that later stores overwrite. */
SK_KATTR static int SK_KFN(const unsigned char *p, Py_ssize_t n, Py_ssize_t limit, unsigned char *out,
                           sk_enc_state *st)
{
    Py_ssize_t i = st->i, ls = st->ls, shift, x, x1, crlf, next, lend;
    uint64_t low;
    unsigned q, c, cr;
    unsigned char *os;

    shift = st->o - i;
    if (i == ls && i < n) { /* at the start of a line: double a leading dot */
        out[i + shift] = '.';
        shift += p[i] == '.';
    }
    /* No line here can be longer than n - ls: a larger limit is as good as that one, and
     * then ls + limit never overflows (the fast path compares x with lend = ls + limit). */
    if (limit > n - ls)
        limit = n - ls;

    /* A block at i, its fix-ups and their re-stores read at most p[i + 127]: a break ends
     * at x1 <= i + 64, since a CRLF that would end at i + 65 restarts the loop instead. */
    os = out + shift;
    lend = ls + limit;
    while (n - i >= 2 * SK_BLOCK) {
        /* The fast path, on pointers (few live values: nothing spills to the stack). ip is
         * the block's input, op where its first byte goes; lendp the end of the longest
         * line allowed. One branch decides: a single, valid break within the limit. */
        {
            const unsigned char *ip = p + i, *iend = p + (n - 2 * SK_BLOCK), *xp, *x1p, *lendp = p + lend;
            unsigned char *op = os + i;
            const uint64_t breaks = 0x2400u; /* bit 10 is LF, 13 CR */
            const Py_ssize_t lim = limit;
            while (ip <= iend) {
                low = SK_KCOPY_LOW64(op, ip);
                if (!low) {
                    ip += SK_BLOCK;
                    op += SK_BLOCK;
                    continue;
                }
                q = sk_ctz64(low);
                xp = ip + q;
                c = *xp; /* <= 13 */
                crlf = sk_is_crlf(xp);
                if (SK_UNLIKELY(((low >> q) ^ (uint64_t)(1 + 2 * crlf)) | (((breaks >> c) & 1) ^ 1) |
                                (uint64_t)(xp > lendp)))
                    break;
                memcpy(op + q, "\r\n..", 4);
                x1p = xp + 1 + crlf;                 /* first byte of the next line */
                op += 1 + (*x1p == '.') - crlf;      /* *x1p goes right after CRLF or CRLF '.' */
                SK_KCOPY64(op + (x1p - ip), x1p);    /* the rest of the block, moved */
                lendp = x1p + lim;
                ip += SK_BLOCK;
                op += SK_BLOCK;
            }
            i = ip - p;
            os = op - i;
            lend = lendp - p;
            if (ip > iend)
                break;
        } /* else low is the mask of the block at i, already stored at os + i */

        /* General case, break by break. */
        shift = os - out;
        ls = lend - limit;
        next = i + SK_BLOCK;
        while (low) {
            q = sk_ctz64(low);
            low &= low - 1;
            x = i + q;
            c = p[x];
            /* Rare cases first, each a well-predicted branch: a byte <= 13 that is no
             * line break (TAB & co. are copied as they are; NUL is an error), a line over
             * the limit, and a CR in the last byte of the block (a CRLF there would end in
             * the next block: restart the loop at the CR instead). */
            if (SK_UNLIKELY(!((0x2400u >> c) & 1))) { /* c <= 13: bit 10 is LF, 13 CR */
                if (c == 0) {
                    st->err = x - ls > limit ? ls : x;
                    return x - ls > limit ? SK_LONG : SK_NUL;
                }
                continue;
            }
            if (SK_UNLIKELY(x - ls > limit)) {
                st->err = ls;
                return SK_LONG;
            }
            cr = c == '\r';
            if (SK_UNLIKELY(q == SK_BLOCK - 1) && cr) {
                next = x;
                break;
            }
            crlf = cr & (p[x + 1] == '\n');
            out[x + shift] = '\r';
            out[x + shift + 1] = '\n';
            x1 = x + 1 + crlf;              /* first byte of the next line */
            shift += 1 - crlf;              /* a bare CR or LF grew by one byte */
            out[x1 + shift] = '.';          /* kept only if the line starts with '.' */
            shift += p[x1] == '.';
            ls = x1;
            SK_KCOPY64(out + x1 + shift, p + x1); /* the rest of the block, moved */
            low &= ~(((uint64_t)crlf << q) << 1); /* the LF of a CRLF is done */
        }
        i = next;
        os = out + shift;
        lend = ls + limit;
    }
    shift = os - out;
    ls = lend - limit;

    /* The last bytes of the chunk (fewer than two blocks), byte by byte. */
    while (i < n) {
        c = p[i];
        if (sk_is_break(c)) {
            if (i - ls > limit) {
                st->err = ls;
                return SK_LONG;
            }
            crlf = c == '\r' && i + 1 < n && p[i + 1] == '\n';
            out[i + shift] = '\r';
            out[i + shift + 1] = '\n';
            shift += 1 - crlf;
            i += 1 + crlf;
            ls = i;
            if (i < n) {
                out[i + shift] = '.';
                shift += p[i] == '.';
            }
            continue;
        }
        if (c == 0) {
            if (i - ls > limit) {
                st->err = ls;
                return SK_LONG;
            }
            st->err = i;
            return SK_NUL;
        }
        out[i + shift] = (unsigned char)c;
        i++;
    }
    if (n - ls > limit) {
        st->err = ls;
        return SK_LONG;
    }
    st->i = n;
    st->o = n + shift;
    st->ls = ls;
    return SK_OK;
}

#undef SK_KFN
#undef SK_KATTR
#undef SK_KCOPY_LOW64
#undef SK_KCOPY64
