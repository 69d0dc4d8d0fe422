/*
 * A reader for the `history` list of a progress.json file that keeps each value's JSON type.
 *
 * DuckDB's JSON reader either casts silently ("17200" and true become numbers) or hands every
 * value back as JSON text, which costs more than reading the file. This reader takes the fast
 * road only when a file's history is plainly valid: every known field of every entry and GPU
 * reading has its right JSON type and passes the checks of ingest/sql.py (`rl_checked`). On
 * anything else (a string in a numeric field, null, a missing step, an escape in a key, a \u
 * escape DuckDB refuses, a number out of range, a byte it does not expect) it gives up and
 * returns None, and the file is read the careful way, which explains every value it drops. So
 * it never decides what a warning says: it only proves that there is none to say.
 *
 * parse(data: bytes, file_id: int) -> None | (start, end, n_entries, entry_buffers, n_gpus, gpu_buffers)
 *   start, end   the byte span of the top-level `history` value (the caller splices it out
 *                and lets DuckDB read the rest of the document)
 *   *_buffers    tuples of column buffers, in the order of ENTRY_BUFFERS and GPU_BUFFERS
 * Fixed-width columns are little-endian arrays; each nullable column comes with an Arrow
 * validity bitmap; strings are Arrow (int32 offsets, bytes).
 *
 * split(data: bytes) -> None | (start, end, spans)
 *   the span of the top-level `history` value and, as int64 (begin, end) pairs, of each of its
 *   entries, whatever they hold: a large file the fast road refused is read the careful way in
 *   pieces of entries (ingest/fast.py, split), so that its memory stays bounded.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_DEPTH 64
/* progress.json's bound on steps and counts of samples (10^18, as rl_whole's in progress.py) */
#define MAX_WHOLE 1000000000000000000ULL

typedef struct {
    char *data;
    size_t len, cap;
    int failed;
} Buf;

static void buf_grow(Buf *b, size_t extra) {
    if (b->failed) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) { b->failed = 1; return; }
    b->data = data;
    b->cap = cap;
}

static inline void buf_put(Buf *b, const void *src, size_t n) {
    /* an empty string into a buffer not yet allocated: memcpy(NULL, src, 0) is undefined */
    if (n == 0) return;
    if (b->len + n > b->cap) buf_grow(b, n);
    if (b->failed) return;
    memcpy(b->data + b->len, src, n);
    b->len += n;
}

/* A nullable column: values plus an Arrow validity bitmap (bit i set: row i has a value). */
typedef struct {
    Buf values;
    Buf valid;
} Col;

static inline void col_put(Col *c, int64_t row, const void *value, size_t width, int present) {
    if ((size_t)(row / 8) >= c->valid.len) {
        char zero = 0;
        buf_put(&c->valid, &zero, 1);
    }
    if (present && !c->valid.failed) c->valid.data[row / 8] |= (char)(1 << (row % 8));
    buf_put(&c->values, value, width);
}

typedef struct {
    Buf offsets; /* int32, rows + 1 */
    Buf bytes;
    Buf valid;
} StrCol;

static inline void str_put(StrCol *c, int64_t row, const char *s, size_t n, int present) {
    if (row == 0) {
        int32_t zero = 0;
        buf_put(&c->offsets, &zero, 4);
    }
    if ((size_t)(row / 8) >= c->valid.len) {
        char zero = 0;
        buf_put(&c->valid, &zero, 1);
    }
    if (present && !c->valid.failed) c->valid.data[row / 8] |= (char)(1 << (row % 8));
    if (present) buf_put(&c->bytes, s, n);
    int32_t end = (int32_t)c->bytes.len;
    buf_put(&c->offsets, &end, 4);
}

/* The entry columns, in the order parse() returns them. */
enum { E_LOSS, E_EVAL_LOSS, E_LEARNING_RATE, E_SAMPLES_PER_SECOND, E_ITERATION_TIME, E_DOUBLES };
/* The GPU reading columns. */
enum { G_UTILIZATION, G_MEMORY_USED, G_MEMORY_TOTAL, G_TEMPERATURE, G_POWER, G_DOUBLES };

typedef struct {
    int32_t file_id;
    int64_t entries, gpus;
    /* entries */
    Buf e_file, e_pos, e_step;
    Col e_ts, e_samples;
    Col e_num[E_DOUBLES];
    /* gpu readings */
    Buf g_file, g_pos, g_gpos, g_step;
    Col g_index;
    StrCol g_uuid;
    Col g_num[G_DOUBLES];
} Out;

typedef struct {
    const char *p, *end;
} Cur;

#define BAIL (-1)

static inline void skip_ws(Cur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t')) c->p++;
}

static inline int expect(Cur *c, char ch) {
    skip_ws(c);
    if (c->p >= c->end || *c->p != ch) return BAIL;
    c->p++;
    return 0;
}

/* Bytes that end the plain run of a string: the quote, a backslash, control bytes (invalid in
 * JSON) and, for plain-ASCII strings, bytes >= 0x80. */
static unsigned char STOP_ANY[256], STOP_ASCII[256];

static void init_tables(void) {
    for (int ch = 0; ch < 256; ch++) {
        STOP_ANY[ch] = ch == '"' || ch == '\\' || ch < 0x20;
        STOP_ASCII[ch] = STOP_ANY[ch] || ch >= 0x80;
    }
}

/* The four hex digits of a \u escape at p, as a code unit. */
static int hex4(const char *p, const char *end, unsigned *out) {
    if (end - p < 4) return BAIL;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char ch = p[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0'
              : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
              : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
              : -1;
        if (d < 0) return BAIL;
        v = v * 16 + (unsigned)d;
    }
    *out = v;
    return 0;
}

/* A \u escape at p (just after the "u"), as DuckDB's JSON reader takes them: four hex digits,
 * and a surrogate only as a high one followed at once by an escaped low one. DuckDB refuses
 * the file for anything else, so the reader must give up too, even on a value it would skip
 * (the careful read then fails the file as DuckDB does). Returns the byte after the escape. */
static const char *unicode_escape(const char *p, const char *end) {
    unsigned unit, low;
    if (hex4(p, end, &unit)) return NULL;
    p += 4;
    if (unit >= 0xDC00 && unit <= 0xDFFF) return NULL; /* a low surrogate alone */
    if (unit >= 0xD800 && unit <= 0xDBFF) {
        if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, end, &low) || low < 0xDC00 || low > 0xDFFF)
            return NULL;
        p += 6;
    }
    return p;
}

/* A string at c->p (the opening quote). Sets its raw content span; *escaped when it holds a
 * backslash. With ascii_only, any byte >= 0x80 gives up (history values must be plain). */
static int scan_string(Cur *c, const char **s, size_t *n, int *escaped, int ascii_only) {
    if (c->p >= c->end || *c->p != '"') return BAIL;
    const unsigned char *stop = ascii_only ? STOP_ASCII : STOP_ANY;
    const char *start = ++c->p, *p = c->p, *end = c->end;
    *escaped = 0;
    for (;;) {
        while (p < end && !stop[(unsigned char)*p]) p++;
        if (p >= end) return BAIL;
        if (*p == '"') break;
        if (*p != '\\') return BAIL;
        *escaped = 1;
        p++;
        if (p >= end || !strchr("\"\\/bfnrtu", *p) || *p == 0) return BAIL;
        if (*p == 'u') {
            p = unicode_escape(p + 1, end);
            if (!p) return BAIL;
        } else {
            p++;
        }
    }
    *s = start;
    *n = (size_t)(p - start);
    c->p = p + 1;
    return 0;
}

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                               1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* A JSON number (or NaN, Infinity, -Infinity, as Python's json writes them) as a double,
 * correctly rounded: exact arithmetic when it can be (Clinger's fast path), else strtod. */
static int scan_number(Cur *c, double *out) {
    const char *start = c->p, *end = c->end;
    const char *p = start;
    int negative = 0;
    if (p < end && *p == '-') { negative = 1; p++; }
    if (end - p >= 8 && memcmp(p, "Infinity", 8) == 0) {
        c->p = p + 8;
        *out = negative ? -INFINITY : INFINITY;
        return 0;
    }
    if (!negative && end - p >= 3 && memcmp(p, "NaN", 3) == 0) {
        c->p = p + 3;
        *out = NAN;
        return 0;
    }
    /* digits and exp10 stop counting far beyond where the number gives up anyway (19 digits;
     * 290 as exponent): a number of billions of digits must not overflow them */
    uint64_t mantissa = 0;
    int digits = 0, exp10 = 0;
    if (p >= end || *p < '0' || *p > '9') return BAIL;
    if (*p == '0') {
        p++;
    } else {
        while (p < end && *p >= '0' && *p <= '9') {
            if (digits < 19) mantissa = mantissa * 10 + (uint64_t)(*p - '0'); else if (exp10 < 1000000) exp10++;
            if (mantissa && digits < 20) digits++;
            p++;
        }
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9') return BAIL;
        while (p < end && *p >= '0' && *p <= '9') {
            if (digits < 19) {
                mantissa = mantissa * 10 + (uint64_t)(*p - '0');
                if (exp10 > -1000000) exp10--;
            }
            if (mantissa && digits < 20) digits++;
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        int eneg = 0, e = 0;
        if (p < end && (*p == '+' || *p == '-')) { eneg = *p == '-'; p++; }
        if (p >= end || *p < '0' || *p > '9') return BAIL;
        while (p < end && *p >= '0' && *p <= '9') {
            if (e < 10000) e = e * 10 + (*p - '0');
            p++;
        }
        exp10 += eneg ? -e : e;
    }
    c->p = p;
    if (digits <= 15 && exp10 >= -22 && exp10 <= 22) {
        double d = (double)mantissa;
        d = exp10 < 0 ? d / POW10[-exp10] : d * POW10[exp10];
        *out = negative ? -d : d;
        return 0;
    }
    /* rare: long mantissas or large exponents; values near the ends of the range give up */
    if (exp10 > 290 || exp10 < -290) return BAIL;
    char tmp[128];
    size_t n = (size_t)(p - start);
    if (n >= sizeof tmp) return BAIL;
    memcpy(tmp, start, n);
    tmp[n] = 0;
    *out = strtod(tmp, NULL);
    return isfinite(*out) ? 0 : BAIL;
}

/* How skip_value treats what it skips: SKIP_ASCII gives up on any byte >= 0x80 in a string;
 * SKIP_TOKENS takes a bare token (number, true, NaN, 1e400, ...) as any run of bytes up to a
 * delimiter, left for DuckDB to judge (split() only finds the entries' bytes). */
enum { SKIP_ASCII = 1, SKIP_TOKENS = 2 };

static int skip_literal(Cur *c) {
    double d;
    switch (*c->p) {
    case 't':
        if (c->end - c->p >= 4 && memcmp(c->p, "true", 4) == 0) { c->p += 4; return 0; }
        return BAIL;
    case 'f':
        if (c->end - c->p >= 5 && memcmp(c->p, "false", 5) == 0) { c->p += 5; return 0; }
        return BAIL;
    case 'n':
        if (c->end - c->p >= 4 && memcmp(c->p, "null", 4) == 0) { c->p += 4; return 0; }
        return BAIL;
    default:
        return scan_number(c, &d);
    }
}

static int skip_token(Cur *c) {
    const char *start = c->p;
    while (c->p < c->end && !strchr(",]}:[{\" \t\r\n", *c->p) && *c->p != 0) c->p++;
    return c->p > start ? 0 : BAIL;
}

/* Skip any JSON value (fields the warehouse does not read); mode: SKIP_* flags. */
static int skip_value(Cur *c, int depth, int mode) {
    if (depth > MAX_DEPTH) return BAIL;
    skip_ws(c);
    if (c->p >= c->end) return BAIL;
    const char *s;
    size_t n;
    int escaped, ascii_only = mode & SKIP_ASCII;
    switch (*c->p) {
    case '"':
        return scan_string(c, &s, &n, &escaped, ascii_only);
    case '{':
        c->p++;
        skip_ws(c);
        if (c->p < c->end && *c->p == '}') { c->p++; return 0; }
        for (;;) {
            skip_ws(c);
            if (scan_string(c, &s, &n, &escaped, ascii_only) || expect(c, ':') || skip_value(c, depth + 1, mode))
                return BAIL;
            skip_ws(c);
            if (c->p < c->end && *c->p == ',') { c->p++; continue; }
            return expect(c, '}');
        }
    case '[':
        c->p++;
        skip_ws(c);
        if (c->p < c->end && *c->p == ']') { c->p++; return 0; }
        for (;;) {
            if (skip_value(c, depth + 1, mode)) return BAIL;
            skip_ws(c);
            if (c->p < c->end && *c->p == ',') { c->p++; continue; }
            return expect(c, ']');
        }
    default:
        return mode & SKIP_TOKENS ? skip_token(c) : skip_literal(c);
    }
}

/* A number for a field checked as rl_checked(d, lo, hi, integral) checks it; BAIL where that
 * check would drop it (the careful read then says why). */
static int checked_number(Cur *c, double lo, double hi, int integral, double *out) {
    skip_ws(c);
    if (c->p >= c->end) return BAIL;
    char ch = *c->p;
    if (!(ch == '-' || (ch >= '0' && ch <= '9') || ch == 'N' || ch == 'I')) return BAIL;
    if (scan_number(c, out)) return BAIL;
    double d = *out;
    if (isfinite(d) && (d < lo || d > hi)) return BAIL;
    if (integral && !(isfinite(d) && d == floor(d))) return BAIL;
    return 0;
}

/* A whole number for a field checked as rl_whole(x, 0, hi) checks it (a step, a count of
 * samples): an integer literal is read exactly (a double would round it above 2^53: 2^53 + 1
 * would become 2^53, another step) and must be at most hi; any other form (a fraction, an
 * exponent) is read as a double, as rl_checked(d, 0, hi, true). BAIL where that check would drop it. */
static int checked_whole(Cur *c, uint64_t hi, int64_t *out) {
    double d;
    skip_ws(c);
    const char *start = c->p;
    if (checked_number(c, 0, (double)hi, 1, &d)) return BAIL;
    const char *p = start, *end = c->p;
    if (p < end && *p == '-') p++;
    int literal = p < end;
    for (const char *q = p; q < end; q++)
        if (*q < '0' || *q > '9') literal = 0;
    if (!literal) {
        *out = (int64_t)d;
        return 0;
    }
    if (end - p > 19) return BAIL; /* above 10^19: out of range */
    uint64_t v = 0;
    for (; p < end; p++) v = v * 10 + (uint64_t)(*p - '0');
    if (v > hi) return BAIL;
    *out = (int64_t)v; /* (a minus sign passed checked_number only before 0) */
    return 0;
}

typedef struct {
    const char *name;
    size_t len;
} Key;
#define KEY(s) {s, sizeof(s) - 1}

/* Which of the keys a key is; -2 when it equals one of them ignoring case only (DuckDB may
 * match keys without regard to case: give up rather than guess), -1 when none. */
static int key_index(const char *s, size_t n, const Key *keys, int count) {
    for (int i = 0; i < count; i++) {
        if (keys[i].len != n) continue;
        if (s[0] == keys[i].name[0] && memcmp(s, keys[i].name, n) == 0) return i;
        if (strncasecmp(s, keys[i].name, n) == 0) return -2;
    }
    return -1;
}

/* The next member's key of an entry or GPU reading: *k is which of the keys it is (-1: none).
 * A key seen twice in the object, or one known but for its case, gives up. */
static int next_key(Cur *c, const Key *keys, int count, int *seen, int *k) {
    const char *s;
    size_t n;
    int escaped;
    skip_ws(c);
    if (scan_string(c, &s, &n, &escaped, 1) || escaped || expect(c, ':')) return BAIL;
    *k = key_index(s, n, keys, count);
    if (*k == -2 || (*k >= 0 && (*seen & (1 << *k)))) return BAIL;
    if (*k >= 0) *seen |= 1 << *k;
    return 0;
}

static const Key GPU_KEYS[] = {KEY("utilization_percent"), KEY("memory_used_mb"), KEY("memory_total_mb"),
                               KEY("temperature_c"), KEY("power_w"), KEY("index"), KEY("uuid")};
static const double GPU_LO[] = {0, 0, 0, -273.15, 0};
static const double GPU_HI[] = {100, 1e308, 1e308, 1e308, 1e308};

static int parse_gpu(Cur *c, Out *o, int32_t pos, int32_t gpos) {
    if (expect(c, '{')) return BAIL;
    double nums[G_DOUBLES];
    int seen = 0;
    double index = 0;
    const char *uuid = NULL;
    size_t uuid_len = 0;
    skip_ws(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
    } else {
        for (;;) {
            int k;
            if (next_key(c, GPU_KEYS, 7, &seen, &k)) return BAIL;
            if (k >= 0 && k < G_DOUBLES) {
                if (checked_number(c, GPU_LO[k], GPU_HI[k], 0, &nums[k])) return BAIL;
            } else if (k == 5) {
                if (checked_number(c, 0, 1e6, 1, &index)) return BAIL;
            } else if (k == 6) {
                int escaped;
                skip_ws(c);
                if (scan_string(c, &uuid, &uuid_len, &escaped, 1) || escaped) return BAIL;
            } else if (skip_value(c, 2, SKIP_ASCII)) {
                return BAIL;
            }
            skip_ws(c);
            if (c->p < c->end && *c->p == ',') { c->p++; continue; }
            if (expect(c, '}')) return BAIL;
            break;
        }
    }
    /* no index, no reading and no uuid but blanks: no GPU, dropped with a warning by the careful read */
    if (!(seen & 0x3F)) {
        int blank = 1;
        for (size_t i = 0; (seen >> 6) & 1 && i < uuid_len; i++)
            if (!strchr(" \t\n\r\f\v", uuid[i]) || uuid[i] == 0) blank = 0;
        if (blank) return BAIL;
    }
    int64_t row = o->gpus++;
    int64_t idx = (int64_t)index, zero = 0;
    buf_put(&o->g_file, &o->file_id, 4);
    buf_put(&o->g_pos, &pos, 4);
    buf_put(&o->g_gpos, &gpos, 4);
    buf_put(&o->g_step, &zero, 8); /* filled in when the entry's step is known */
    col_put(&o->g_index, row, &idx, 8, (seen >> 5) & 1);
    str_put(&o->g_uuid, row, uuid, uuid_len, (seen >> 6) & 1);
    for (int i = 0; i < G_DOUBLES; i++) {
        double v = (seen >> i) & 1 ? nums[i] : 0.0;
        col_put(&o->g_num[i], row, &v, 8, (seen >> i) & 1);
    }
    return 0;
}

static int parse_gpus(Cur *c, Out *o, int32_t pos) {
    if (expect(c, '[')) return BAIL;
    skip_ws(c);
    if (c->p < c->end && *c->p == ']') { c->p++; return 0; }
    for (int32_t gpos = 1;; gpos++) {
        if (parse_gpu(c, o, pos, gpos)) return BAIL;
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') { c->p++; continue; }
        return expect(c, ']');
    }
}

static int digits(const char *s, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return BAIL;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The instants of years 1 to 9999 in UTC, in microseconds since the epoch: [0001-01-01T00:00:00,
 * 9999-12-31T23:59:59.999999]; Python's datetime holds no other. The same bounds as the SQL's
 * (warehouse/times.py's IN_YEARS: ingest/sql.py's rl_in_years, the copy to PostgreSQL): keep
 * them alike. */
#define MIN_MICROS (-62135596800LL * 1000000)
#define MAX_MICROS (253402300800LL * 1000000 - 1)

/* Whether s[0..n) is UTC or GMT by name, after a blank or not: offset 0 (sql.py's _NAMED_UTC) */
static int named_utc(const char *s, size_t n) {
    if (n == 4 && s[0] == ' ') s++, n--;
    return n == 3 && (memcmp(s, "UTC", 3) == 0 || memcmp(s, "GMT", 3) == 0);
}

/* An ISO-8601 timestamp as rl_iso reads it, in microseconds since the epoch (UTC). Only the
 * plain form: YYYY-MM-DD[T ]HH:MM:SS[.f{1,6}][Z|+HH:MM|-HH:MM|[ ]UTC|[ ]GMT]; anything else (other forms
 * DuckDB reads too, or dates it would refuse) gives up, and the careful read decides. So does
 * an instant the offset takes out of years 1-9999 (0001-01-01T00:30:00+01:00 is in year 0 in
 * UTC): rl_iso refuses it, with the careful read's warning. */
static int iso_micros(const char *s, size_t n, int64_t *out) {
    int y, mo, d, h, mi, se, frac = 0, scale = 1000000;
    if (n < 19 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != ' ') || s[13] != ':' || s[16] != ':')
        return BAIL;
    if (digits(s, 4, &y) || digits(s + 5, 2, &mo) || digits(s + 8, 2, &d) || digits(s + 11, 2, &h) ||
        digits(s + 14, 2, &mi) || digits(s + 17, 2, &se))
        return BAIL;
    static const int DAYS[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > DAYS[mo - 1] + (mo == 2 && leap) || h > 23 || mi > 59 || se > 59)
        return BAIL;
    size_t i = 19;
    if (i < n && s[i] == '.') {
        size_t start = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9' && i - start < 6) {
            frac = frac * 10 + (s[i] - '0');
            scale /= 10;
            i++;
        }
        if (i == start || (i < n && s[i] >= '0' && s[i] <= '9')) return BAIL;
    }
    int offset = 0;
    if (i < n && s[i] == 'Z') {
        i++;
    } else if (named_utc(s + i, n - i)) {
        i = n;
    } else if (i < n && (s[i] == '+' || s[i] == '-')) {
        int oh, om;
        if (n - i != 6 || s[i + 3] != ':' || digits(s + i + 1, 2, &oh) || digits(s + i + 4, 2, &om) || oh > 23 ||
            om > 59)
            return BAIL;
        offset = (s[i] == '-' ? -1 : 1) * (oh * 60 + om);
        i += 6;
    }
    if (i != n) return BAIL;
    int64_t seconds = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset * 60;
    int64_t micros = seconds * 1000000 + (int64_t)frac * scale;
    if (micros < MIN_MICROS || micros > MAX_MICROS) return BAIL;
    *out = micros;
    return 0;
}

static const Key ENTRY_KEYS[] = {KEY("loss"), KEY("eval_loss"), KEY("learning_rate"), KEY("samples_per_second"),
                                 KEY("iteration_time"), KEY("step"), KEY("samples"), KEY("timestamp"), KEY("gpus")};
static const double ENTRY_LO[] = {-1e308, -1e308, -1e308, 0, 0};

static int parse_entry(Cur *c, Out *o, int32_t pos) {
    if (expect(c, '{')) return BAIL;
    double nums[E_DOUBLES];
    int64_t ts = 0, st = 0, sa = 0;
    int seen = 0;
    int64_t first_gpu = o->gpus;
    skip_ws(c);
    if (c->p < c->end && *c->p == '}') return BAIL; /* no step */
    for (;;) {
        int k;
        if (next_key(c, ENTRY_KEYS, 9, &seen, &k)) return BAIL;
        if (k >= 0 && k < E_DOUBLES) {
            if (checked_number(c, ENTRY_LO[k], 1e308, 0, &nums[k])) return BAIL;
        } else if (k == 5) {
            if (checked_whole(c, MAX_WHOLE, &st)) return BAIL;
        } else if (k == 6) {
            if (checked_whole(c, MAX_WHOLE, &sa)) return BAIL;
        } else if (k == 7) {
            skip_ws(c);
            if (c->p < c->end && *c->p == '"') {
                const char *text;
                size_t len;
                int escaped;
                if (scan_string(c, &text, &len, &escaped, 1) || escaped || iso_micros(text, len, &ts)) return BAIL;
            } else {
                /* epoch seconds, as rl_epoch: finite, from year 1 (-62135596800) to under 1e11,
                 * rounded to microseconds as Python's fromtimestamp: the whole seconds exactly,
                 * the fraction (exact) times 1e6 rounded half to even (nearbyint, in the default
                 * rounding mode); llround(epoch * 1e6) rounded twice, and halves away from 0 */
                double epoch;
                if (checked_number(c, -1e308, 1e308, 0, &epoch) || !isfinite(epoch) || epoch < -62135596800.0 || epoch >= 1e11)
                    return BAIL;
                double whole = trunc(epoch);
                ts = (int64_t)whole * 1000000 + (int64_t)nearbyint((epoch - whole) * 1e6);
            }
        } else if (k == 8) {
            if (parse_gpus(c, o, pos)) return BAIL;
        } else if (skip_value(c, 1, SKIP_ASCII)) {
            return BAIL;
        }
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') { c->p++; continue; }
        if (expect(c, '}')) return BAIL;
        break;
    }
    if (!((seen >> 5) & 1)) return BAIL; /* no step */
    int64_t row = o->entries++;
    buf_put(&o->e_file, &o->file_id, 4);
    buf_put(&o->e_pos, &pos, 4);
    buf_put(&o->e_step, &st, 8);
    col_put(&o->e_ts, row, &ts, 8, (seen >> 7) & 1);
    col_put(&o->e_samples, row, &sa, 8, (seen >> 6) & 1);
    for (int i = 0; i < E_DOUBLES; i++) {
        double v = (seen >> i) & 1 ? nums[i] : 0.0;
        col_put(&o->e_num[i], row, &v, 8, (seen >> i) & 1);
    }
    if (!o->g_step.failed)
        for (int64_t g = first_gpu; g < o->gpus; g++) memcpy(o->g_step.data + 8 * g, &st, 8);
    return 0;
}

/* One entry of the history list at c->p; pos counts from 1. */
typedef int (*EntryFn)(Cur *c, void *arg, int64_t pos);

static int walk_history(Cur *c, EntryFn entry, void *arg) {
    if (expect(c, '[')) return BAIL;
    skip_ws(c);
    if (c->p < c->end && *c->p == ']') { c->p++; return 0; }
    for (int64_t pos = 1;; pos++) {
        if (entry(c, arg, pos)) return BAIL;
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') { c->p++; continue; }
        return expect(c, ']');
    }
}

/* The whole document: a top-level object with one `history` list, each of whose entries goes
 * to `entry`. Other values are skipped as skip_value does in `mode` (DuckDB reads them from the
 * document without its history). */
static int walk_document(Cur *c, const char *base, Py_ssize_t *start, Py_ssize_t *stop, int mode, EntryFn entry,
                         void *arg) {
    /* the second key is the one fast.py adds to the rest of the document: it must be new */
    static const Key TOP[] = {KEY("history"), KEY("__runlytics_file__")};
    int found = 0;
    if (expect(c, '{')) return BAIL;
    skip_ws(c);
    if (c->p < c->end && *c->p == '}') return BAIL;
    for (;;) {
        const char *s;
        size_t n;
        int escaped;
        skip_ws(c);
        if (scan_string(c, &s, &n, &escaped, 0) || escaped || expect(c, ':')) return BAIL;
        int k = key_index(s, n, TOP, 2);
        if (k == -2 || k == 1 || (k == 0 && found)) return BAIL;
        if (k == 0) {
            found = 1;
            skip_ws(c);
            *start = c->p - base;
            if (walk_history(c, entry, arg)) return BAIL;
            *stop = c->p - base;
        } else if (skip_value(c, 1, mode)) {
            return BAIL;
        }
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') { c->p++; continue; }
        if (expect(c, '}')) return BAIL;
        break;
    }
    skip_ws(c);
    return found && c->p == c->end ? 0 : BAIL;
}

static int parse_entry_at(Cur *c, void *o, int64_t pos) {
    return pos > INT32_MAX ? BAIL : parse_entry(c, (Out *)o, (int32_t)pos);
}

/* The buffers parse() returns, in order (ingest/fast.py names them the same way). */
#define ENTRY_BUFFERS(o)                                                                            \
    {&o.e_file, &o.e_pos, &o.e_step, &o.e_ts.valid, &o.e_ts.values, &o.e_num[E_LOSS].valid, &o.e_num[E_LOSS].values,           \
     &o.e_num[E_EVAL_LOSS].valid, &o.e_num[E_EVAL_LOSS].values, &o.e_num[E_LEARNING_RATE].valid,       \
     &o.e_num[E_LEARNING_RATE].values, &o.e_num[E_SAMPLES_PER_SECOND].valid,                           \
     &o.e_num[E_SAMPLES_PER_SECOND].values, &o.e_num[E_ITERATION_TIME].valid,                          \
     &o.e_num[E_ITERATION_TIME].values, &o.e_samples.valid, &o.e_samples.values}
#define GPU_BUFFERS(o)                                                                              \
    {&o.g_file, &o.g_pos, &o.g_gpos, &o.g_step, &o.g_index.valid, &o.g_index.values, &o.g_uuid.valid,  \
     &o.g_uuid.offsets, &o.g_uuid.bytes, &o.g_num[G_UTILIZATION].valid, &o.g_num[G_UTILIZATION].values, \
     &o.g_num[G_MEMORY_USED].valid, &o.g_num[G_MEMORY_USED].values, &o.g_num[G_MEMORY_TOTAL].valid,    \
     &o.g_num[G_MEMORY_TOTAL].values, &o.g_num[G_TEMPERATURE].valid, &o.g_num[G_TEMPERATURE].values,   \
     &o.g_num[G_POWER].valid, &o.g_num[G_POWER].values}

static void out_free(Out *o) {
    Buf *bufs[] = ENTRY_BUFFERS((*o));
    Buf *more[] = GPU_BUFFERS((*o));
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]->data);
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) free(more[i]->data);
}

static PyObject *as_bytes(Buf **bufs, size_t count) {
    PyObject *tuple = PyTuple_New((Py_ssize_t)count);
    if (!tuple) return NULL;
    for (size_t i = 0; i < count; i++) {
        PyObject *b = PyBytes_FromStringAndSize(bufs[i]->data ? bufs[i]->data : "", (Py_ssize_t)bufs[i]->len);
        if (!b) { Py_DECREF(tuple); return NULL; }
        PyTuple_SET_ITEM(tuple, (Py_ssize_t)i, b);
    }
    return tuple;
}

static int any_failed(Buf **bufs, size_t count) {
    for (size_t i = 0; i < count; i++)
        if (bufs[i]->failed) return 1;
    return 0;
}

static PyObject *parse(PyObject *self, PyObject *args) {
    Py_buffer view;
    int file_id;
    if (!PyArg_ParseTuple(args, "y*i", &view, &file_id)) return NULL;
    Out o;
    memset(&o, 0, sizeof o);
    o.file_id = file_id;
    Py_ssize_t start = 0, stop = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    Cur c = {(const char *)view.buf, (const char *)view.buf + view.len};
    rc = walk_document(&c, (const char *)view.buf, &start, &stop, 0, parse_entry_at, &o);
    /* 2 GiB of strings would overflow the int32 offsets */
    if (!rc && o.g_uuid.bytes.len > INT32_MAX) rc = BAIL;
    if (!rc && o.gpus == 0) { /* a well-formed (empty) string column */
        int32_t zero = 0;
        buf_put(&o.g_uuid.offsets, &zero, 4);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    Buf *entry_bufs[] = ENTRY_BUFFERS(o);
    Buf *gpu_bufs[] = GPU_BUFFERS(o);
    size_t n_entry = sizeof entry_bufs / sizeof entry_bufs[0], n_gpu = sizeof gpu_bufs / sizeof gpu_bufs[0];
    PyObject *result = NULL;
    if (any_failed(entry_bufs, n_entry) || any_failed(gpu_bufs, n_gpu)) {
        PyErr_NoMemory();
    } else if (rc) {
        result = Py_NewRef(Py_None);
    } else {
        PyObject *entries = as_bytes(entry_bufs, n_entry);
        PyObject *gpus = entries ? as_bytes(gpu_bufs, n_gpu) : NULL;
        if (gpus)
            result = Py_BuildValue("(nnLNLN)", start, stop, (long long)o.entries, entries, (long long)o.gpus, gpus);
        else
            Py_XDECREF(entries);
    }
    out_free(&o);
    return result;
}

/* split(): the byte span of each entry, whatever it holds (skipped, not checked). Where the
 * layout is not that of parse (one top-level object, keys without escapes, one `history`, a
 * list), a piece-wise read could differ from reading the whole: split() then gives up and the
 * caller reads it whole. */
typedef struct {
    const char *base;
    Buf *spans;
} Spans;

static int span_entry(Cur *c, void *arg, int64_t pos) {
    (void)pos;
    Spans *s = arg;
    skip_ws(c);
    int64_t span[2] = {c->p - s->base, 0};
    if (skip_value(c, 2, SKIP_TOKENS)) return BAIL;
    span[1] = c->p - s->base;
    buf_put(s->spans, span, sizeof span);
    return 0;
}

static PyObject *split(PyObject *self, PyObject *args) {
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*", &view)) return NULL;
    Buf spans;
    memset(&spans, 0, sizeof spans);
    Py_ssize_t start = 0, stop = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    Cur c = {(const char *)view.buf, (const char *)view.buf + view.len};
    Spans ctx = {(const char *)view.buf, &spans};
    rc = walk_document(&c, (const char *)view.buf, &start, &stop, SKIP_TOKENS, span_entry, &ctx);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    PyObject *result = NULL;
    if (spans.failed) {
        PyErr_NoMemory();
    } else if (rc) {
        result = Py_NewRef(Py_None);
    } else {
        result = Py_BuildValue("(nny#)", start, stop, spans.data ? spans.data : "", (Py_ssize_t)spans.len);
    }
    free(spans.data);
    return result;
}

static PyMethodDef METHODS[] = {
    {"parse", parse, METH_VARARGS, "parse(data, file_id) -> None | (start, end, n_entries, entry_buffers, n_gpus, gpu_buffers)"},
    {"split", split, METH_VARARGS, "split(data) -> None | (start, end, spans): int64 (begin, end) of each history entry"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_history", NULL, -1, METHODS, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__history(void) {
    init_tables();
    return PyModule_Create(&MODULE);
}
