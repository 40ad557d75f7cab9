/*
 * Fast scanner for Standard MIDI Files: the C twin of midilm.music.smf.scan_smf_python.
 *
 * It turns the bytes of a file into flat event columns (absolute tick, track, kind, channel, two data
 * values), one row per message except end-of-track, in file order. Both twins must give identical
 * output; tests/test_smf.py checks this on every real file at hand. The AMT codec needs message-level
 * detail (running status, program changes between note-on and note-off, same-tick order, the exact
 * set of message times) that higher-level parsers drop, and a Python loop over bytes is ~40x slower.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* kinds, shared with smf.py */
enum { K_OTHER = 0, K_NOTE_ON = 1, K_NOTE_OFF = 2, K_PROGRAM = 3, K_TEMPO = 4, K_TIMESIG = 5,
       K_KEYSIG = 6, K_CONTROL = 7, K_PITCHBEND = 8 };

typedef struct {
    int64_t *tick; int32_t *track; uint8_t *kind; uint8_t *chan; int16_t *d1; int32_t *d2;
    Py_ssize_t n, cap;
} Cols;

static int cols_grow(Cols *c) {
    Py_ssize_t cap = c->cap ? c->cap * 2 : 4096;
    void *p;
#define GROW(f, T) p = realloc(c->f, (size_t)cap * sizeof(T)); if (!p) return -1; c->f = (T *)p;
    GROW(tick, int64_t) GROW(track, int32_t) GROW(kind, uint8_t) GROW(chan, uint8_t)
    GROW(d1, int16_t) GROW(d2, int32_t)
#undef GROW
    c->cap = cap;
    return 0;
}

static void cols_free(Cols *c) {
    free(c->tick); free(c->track); free(c->kind); free(c->chan); free(c->d1); free(c->d2);
}

static int push(Cols *c, int64_t tick, int32_t track, int kind, int chan, int d1, int32_t d2) {
    if (c->n == c->cap && cols_grow(c) < 0) return -1;
    c->tick[c->n] = tick; c->track[c->n] = track; c->kind[c->n] = (uint8_t)kind;
    c->chan[c->n] = (uint8_t)chan; c->d1[c->n] = (int16_t)d1; c->d2[c->n] = d2;
    c->n++;
    return 0;
}

/* error codes, turned into messages in one place */
enum { E_OK = 0, E_NOMEM, E_NOT_MIDI, E_TRUNCATED, E_DATA_BYTE, E_RUNNING, E_STATUS, E_NO_TRACKS };

static const char *error_text(int e) {
    switch (e) {
    case E_NOT_MIDI: return "not a MIDI file (no MThd header)";
    case E_TRUNCATED: return "truncated MIDI data";
    case E_DATA_BYTE: return "data byte must be in range 0..127";
    case E_RUNNING: return "running status without a previous status byte";
    case E_STATUS: return "undefined status byte";
    default: return "cannot parse MIDI data";
    }
}

static int read_vlq(const uint8_t *b, Py_ssize_t end, Py_ssize_t *pos, int64_t *out) {
    int64_t v = 0;
    for (int i = 0; i < 8; i++) {
        if (*pos >= end) return E_TRUNCATED;
        uint8_t byte = b[(*pos)++];
        v = (v << 7) | (byte & 0x7f);
        if (byte < 0x80) { *out = v; return E_OK; }
    }
    *out = v;
    return E_OK;
}

static int data_length(int status) {
    switch (status & 0xf0) {
    case 0xc0: case 0xd0: return 1;
    case 0x80: case 0x90: case 0xa0: case 0xb0: case 0xe0: return 2;
    }
    switch (status) {
    case 0xf1: case 0xf3: return 1;
    case 0xf2: return 2;
    case 0xf6: case 0xf8: case 0xfa: case 0xfb: case 0xfc: case 0xfe: return 0;
    }
    return -1;
}

static int scan_track(const uint8_t *b, Py_ssize_t pos, Py_ssize_t end, int32_t track, Cols *c) {
    int64_t tick = 0;
    int last_status = -1;
    while (pos < end) {
        int64_t delta;
        int e = read_vlq(b, end, &pos, &delta);
        if (e) return e;
        tick += delta;
        if (pos >= end) return E_TRUNCATED;
        int status = b[pos++];
        uint8_t peek[2];
        int npeek = 0;
        if (status < 0x80) {
            if (last_status < 0) return E_RUNNING;
            peek[npeek++] = (uint8_t)status;
            status = last_status;
        } else if (status != 0xff) {
            last_status = status;
        }
        if (status == 0xff) {
            if (pos >= end) return E_TRUNCATED;
            int type = b[pos++];
            int64_t len;
            e = read_vlq(b, end, &pos, &len);
            if (e) return e;
            if (len < 0 || len > end - pos) return E_TRUNCATED;
            const uint8_t *d = b + pos;
            pos += (Py_ssize_t)len;
            if (type == 0x2f) continue; /* end of track: its time only moves later messages */
            int r;
            if (type == 0x51 && len >= 3)
                r = push(c, tick, track, K_TEMPO, 0, 0, (d[0] << 16) | (d[1] << 8) | d[2]);
            else if (type == 0x58 && len >= 2)
                r = push(c, tick, track, K_TIMESIG, 0, d[0], d[1]);
            else if (type == 0x59 && len >= 2)
                r = push(c, tick, track, K_KEYSIG, 0, (int8_t)d[0], d[1]);
            else
                r = push(c, tick, track, K_OTHER, 0, type, 0);
            if (r < 0) return E_NOMEM;
            continue;
        }
        if (status == 0xf0 || status == 0xf7) {
            int64_t len;
            e = read_vlq(b, end, &pos, &len);
            if (e) return e;
            if (len < 0 || len > end - pos) return E_TRUNCATED;
            pos += (Py_ssize_t)len;
            if (push(c, tick, track, K_OTHER, 0, status, 0) < 0) return E_NOMEM;
            continue;
        }
        int n = data_length(status);
        if (n < 0) return E_STATUS;
        uint8_t data[2] = {0, 0};
        for (int i = 0; i < n; i++) {
            uint8_t v;
            if (i < npeek) v = peek[i];
            else {
                if (pos >= end) return E_TRUNCATED;
                v = b[pos++];
            }
            if (v > 127) return E_DATA_BYTE;
            data[i] = v;
        }
        if (npeek > n) return E_DATA_BYTE; /* running status on a message without data */
        int hi = status & 0xf0, ch = status & 0x0f, r;
        if (hi == 0x90 && data[1] > 0) r = push(c, tick, track, K_NOTE_ON, ch, data[0], data[1]);
        else if (hi == 0x90 || hi == 0x80) r = push(c, tick, track, K_NOTE_OFF, ch, data[0], data[1]);
        else if (hi == 0xc0) r = push(c, tick, track, K_PROGRAM, ch, data[0], 0);
        else if (hi == 0xb0) r = push(c, tick, track, K_CONTROL, ch, data[0], data[1]);
        else if (hi == 0xe0) r = push(c, tick, track, K_PITCHBEND, ch, 0, (data[0] | (data[1] << 7)) - 8192);
        else r = push(c, tick, track, K_OTHER, ch < 16 ? ch : 0, status, 0);
        if (r < 0) return E_NOMEM;
    }
    return E_OK;
}

static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static PyObject *scan(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *b = (const uint8_t *)view.buf;
    Py_ssize_t size = view.len;
    Cols c;
    memset(&c, 0, sizeof c);
    int err = E_OK, fmt = 0, ntracks = 0, division = 0, found = 0;

    if (size < 14 || memcmp(b, "MThd", 4) != 0) {
        err = size < 14 && size >= 4 && memcmp(b, "MThd", 4) == 0 ? E_TRUNCATED : E_NOT_MIDI;
        goto done;
    }
    uint32_t hlen = be32(b + 4);
    if (hlen < 6 || (Py_ssize_t)hlen > size - 8) { err = E_TRUNCATED; goto done; }
    fmt = (b[8] << 8) | b[9];
    ntracks = (b[10] << 8) | b[11];
    division = (int16_t)((b[12] << 8) | b[13]);
    Py_ssize_t pos = 8 + (Py_ssize_t)hlen;
    Py_BEGIN_ALLOW_THREADS
    while (found < ntracks) {
        if (size - pos < 8) { err = E_TRUNCATED; break; }
        uint32_t clen = be32(b + pos + 4);
        int is_track = memcmp(b + pos, "MTrk", 4) == 0;
        pos += 8;
        if ((Py_ssize_t)clen > size - pos) { err = E_TRUNCATED; break; }
        if (is_track) {
            err = scan_track(b, pos, pos + (Py_ssize_t)clen, found, &c);
            if (err) break;
            found++;
        }
        pos += (Py_ssize_t)clen;
    }
    Py_END_ALLOW_THREADS

done:
    PyBuffer_Release(&view);
    if (err) {
        cols_free(&c);
        if (err == E_NOMEM) return PyErr_NoMemory();
        PyErr_SetString(PyExc_ValueError, error_text(err));
        return NULL;
    }
    PyObject *res = Py_BuildValue(
        "iiiny#y#y#y#y#y#", fmt, ntracks, division, c.n,
        (const char *)c.tick, c.n * (Py_ssize_t)sizeof(int64_t),
        (const char *)c.track, c.n * (Py_ssize_t)sizeof(int32_t),
        (const char *)c.kind, c.n * (Py_ssize_t)sizeof(uint8_t),
        (const char *)c.chan, c.n * (Py_ssize_t)sizeof(uint8_t),
        (const char *)c.d1, c.n * (Py_ssize_t)sizeof(int16_t),
        (const char *)c.d2, c.n * (Py_ssize_t)sizeof(int32_t));
    cols_free(&c);
    return res;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_O, "scan(data) -> (format, ntracks, division, n, tick, track, kind, chan, d1, d2)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_smfscan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__smfscan(void) { return PyModule_Create(&module); }
