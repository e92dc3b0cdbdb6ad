/* The protobuf wire format of the two ingest requests the gateway reads, walked in C
 * and returned as plain Python values in one call (see __init__.py for why).
 *
 *   otlp_logs(body)       opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest
 *   otlp_attributes(raw)  the attributes of an opentelemetry.proto.resource.v1.Resource
 *   loki_push(body)       Loki's logproto.PushRequest
 *   loki_entries(...)     a Loki stream's entries (from either push encoding) as
 *                         LogEntryIn, the loop of loki/translate.py in C
 *
 * The body is untrusted: every read is bounds-checked, recursion is bounded, and any
 * malformed input raises ValueError with a short reason. The rules are protobuf's, as
 * the upb runtime applies them: unknown fields are skipped (groups included), a field
 * of a known number but another wire type is an unknown field, the last value of a
 * singular field wins, a message field seen twice is merged, proto3 strings must be
 * valid UTF-8, a varint is at most 10 bytes, a tag at most 5.
 *
 * OTLP values (AnyValue) are decoded as the gateway decoded them before, each raw
 * AnyValue on its own: a value whose key is repeated later in the same attribute list
 * is replaced and never judged, and the structure of a value is checked level by level
 * (phase 1: the message's own fields; phase 2: the values it holds).
 *
 * A little of the mapping is done here, where it costs least: OTLP ids as lower-case
 * hex (empty or all zeros: None; another length: an error, as in the Collector), and
 * times as aware UTC datetimes, each the exact twin of the Python function it names
 * (otlp/mapping.py `time_of`, ingest/translated.py `from_micros`; tests/
 * test_protowire.py holds them together).
 *
 * C99 and the CPython C API only.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>

#include <stdint.h>
#include <string.h>

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

/* Messages (and groups) nested within one message being parsed, as upb's default. */
#define MAX_MESSAGE_DEPTH 100
/* AnyValues nested in one another (arrays, key-value lists). The gateway's Python
 * decoder stopped at its recursion limit, about 300 levels; this is below it, so that
 * what is accepted can still be walked by the mapping's recursive Python code. */
#define MAX_VALUE_DEPTH 256

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} Cursor;

/* Two's complement reinterpretations, spelled out (a plain cast of an out-of-range
 * value to a signed type is implementation-defined in C99). */
static int64_t
as_int64(uint64_t value)
{
    return value <= INT64_MAX ? (int64_t)value : -(int64_t)(~value) - 1;
}

static int32_t
as_int32(uint64_t value)
{
    uint32_t low = (uint32_t)value;
    return low <= INT32_MAX ? (int32_t)low : -(int32_t)(~low) - 1;
}

static int
failed(const char *reason)
{
    PyErr_SetString(PyExc_ValueError, reason);
    return -1;
}

/* -- The wire format. ------------------------------------------------------------- */

static int
read_varint(Cursor *c, uint64_t *out)
{
    const uint8_t *p = c->p;
    uint64_t value = 0;
    int i;
    if (p < c->end && *p < 0x80) {
        *out = *p;
        c->p = p + 1;
        return 0;
    }
    for (i = 0; i < 10; i++) {
        uint64_t byte;
        if (p >= c->end)
            return failed("a varint is truncated");
        byte = *p++;
        value |= (byte & 0x7F) << (7 * i); /* bits past the 64th are dropped, as upb does */
        if (!(byte & 0x80)) {
            *out = value;
            c->p = p;
            return 0;
        }
    }
    return failed("a varint is longer than 10 bytes");
}

static int
read_tag(Cursor *c, uint32_t *field, int *wire_type)
{
    const uint8_t *start = c->p;
    uint64_t tag;
    if (read_varint(c, &tag) < 0)
        return -1;
    if (c->p - start > 5 || tag > UINT32_MAX)
        return failed("a field tag is malformed");
    if ((tag >> 3) == 0)
        return failed("a field has number 0");
    *field = (uint32_t)(tag >> 3);
    *wire_type = (int)(tag & 7);
    return 0;
}

/* A length-delimited field's content, as a cursor of its own. */
static int
read_len(Cursor *c, Cursor *sub)
{
    uint64_t size;
    if (read_varint(c, &size) < 0)
        return -1;
    if (size >= INT32_MAX || size > (uint64_t)(c->end - c->p))
        return failed("a length runs past the end");
    sub->p = c->p;
    sub->end = c->p + size;
    c->p += size;
    return 0;
}

static int
read_fixed64(Cursor *c, uint64_t *out)
{
    uint64_t value = 0;
    int i;
    if (c->end - c->p < 8)
        return failed("a fixed64 is truncated");
    for (i = 7; i >= 0; i--)
        value = value << 8 | c->p[i];
    c->p += 8;
    *out = value;
    return 0;
}

static int skip_group(Cursor *c, uint32_t field, int depth);

/* Skips one field of any wire type; `depth`: the messages it is nested in. */
static int
skip_field(Cursor *c, uint32_t field, int wire_type, int depth)
{
    uint64_t ignored;
    Cursor sub;
    switch (wire_type) {
    case WT_VARINT:
        return read_varint(c, &ignored);
    case WT_I64:
        return read_fixed64(c, &ignored);
    case WT_LEN:
        return read_len(c, &sub);
    case WT_I32:
        if (c->end - c->p < 4)
            return failed("a fixed32 is truncated");
        c->p += 4;
        return 0;
    case WT_SGROUP:
        return skip_group(c, field, depth + 1);
    case WT_EGROUP:
        return failed("an end-group tag has no group");
    default:
        return failed("a field has an invalid wire type");
    }
}

static int
skip_group(Cursor *c, uint32_t field, int depth)
{
    if (depth > MAX_MESSAGE_DEPTH)
        return failed("groups are nested too deeply");
    while (c->p < c->end) {
        uint32_t number;
        int wire_type;
        if (read_tag(c, &number, &wire_type) < 0)
            return -1;
        if (wire_type == WT_EGROUP)
            return number == field ? 0 : failed("an end-group tag does not match its group");
        if (skip_field(c, number, wire_type, depth) < 0)
            return -1;
    }
    return failed("a group has no end");
}

/* Every field of a message skipped: its structure checked, nothing kept. */
static int
check_fields(Cursor c, int depth)
{
    while (c.p < c.end) {
        uint32_t field;
        int wire_type;
        if (read_tag(&c, &field, &wire_type) < 0 || skip_field(&c, field, wire_type, depth) < 0)
            return -1;
    }
    return 0;
}

/* Whether a string decoded since otlp_logs began holds a NUL character (U+0000 is the
 * byte 0 in UTF-8, and only that). Without one, validation skips looking for NUL in
 * every field of every entry (the GIL serialises calls: one flag serves). */
static int strings_held_nul;

static void
note_nul(const uint8_t *p, const uint8_t *end)
{
    if (p < end && memchr(p, 0, end - p) != NULL)
        strings_held_nul = 1;
}

static PyObject *
text_of(const uint8_t *p, const uint8_t *end)
{
    PyObject *text;
    const uint8_t *q = p;
    uint8_t high = 0;
    note_nul(p, end);
    /* Most text is ASCII, which is valid UTF-8 as it is: copied without decoding. */
    while (q < end)
        high |= *q++;
    if (!(high & 0x80)) {
        if ((text = PyUnicode_New(end - p, 127)) != NULL)
            memcpy(PyUnicode_1BYTE_DATA(text), p, end - p);
        return text;
    }
    text = PyUnicode_DecodeUTF8((const char *)p, end - p, NULL);
    if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        failed("a string is not valid UTF-8");
    }
    return text;
}

/* A string field's value (a new reference), replacing *slot. */
static int
read_string(Cursor *c, PyObject **slot)
{
    Cursor sub;
    PyObject *text;
    if (read_len(c, &sub) < 0 || (text = text_of(sub.p, sub.end)) == NULL)
        return -1;
    Py_XSETREF(*slot, text);
    return 0;
}

static PyObject *
empty_if_null(PyObject *text)
{
    return text != NULL ? text : PyUnicode_FromStringAndSize(NULL, 0);
}

/* Names (attribute keys, structured metadata names) repeat from record to record: a
 * short ASCII one is made once and handed out again, its hash computed once. The
 * cache is direct-mapped and only ever holds KEY_CACHE_SIZE small strings. */
#define KEY_CACHE_SIZE 512
#define KEY_CACHE_LENGTH 64
static PyObject *key_cache[KEY_CACHE_SIZE];

static PyObject *
name_of(const uint8_t *p, const uint8_t *end)
{
    Py_ssize_t length = end - p, i;
    uint32_t hash = 2166136261u; /* FNV-1a */
    uint8_t ascii = 0;
    PyObject *name, **slot;
    if (length == 0 || length > KEY_CACHE_LENGTH)
        return text_of(p, end);
    note_nul(p, end);
    for (i = 0; i < length; i++) {
        ascii |= p[i];
        hash = (hash ^ p[i]) * 16777619u;
    }
    if (ascii & 0x80)
        return text_of(p, end);
    slot = &key_cache[hash % KEY_CACHE_SIZE];
    if (*slot != NULL && PyUnicode_GET_LENGTH(*slot) == length &&
        memcmp(PyUnicode_1BYTE_DATA(*slot), p, length) == 0)
        return Py_NewRef(*slot);
    if ((name = PyUnicode_New(length, 127)) == NULL)
        return NULL;
    memcpy(PyUnicode_1BYTE_DATA(name), p, length);
    Py_XSETREF(*slot, Py_NewRef(name));
    return name;
}

/* A name field's value (a new reference), replacing *slot. */
static int
read_name(Cursor *c, PyObject **slot)
{
    Cursor sub;
    PyObject *name;
    if (read_len(c, &sub) < 0 || (name = name_of(sub.p, sub.end)) == NULL)
        return -1;
    Py_XSETREF(*slot, name);
    return 0;
}

/* A tuple that holds no tracked container cannot be part of a reference cycle: it is
 * untracked at once, as the collector would untrack it at its next pass. A request's
 * worth of tracked tuples would make the collector walk them, and run more often. */
static PyObject *
untracked(PyObject *tuple)
{
    Py_ssize_t i;
    if (tuple == NULL)
        return NULL;
    for (i = 0; i < PyTuple_GET_SIZE(tuple); i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        if (PyObject_IS_GC(item) && PyObject_GC_IsTracked(item))
            return tuple;
    }
    PyObject_GC_UnTrack(tuple);
    return tuple;
}

/* -- Times. ------------------------------------------------------------------------ */

/* What datetime holds, in µs from the epoch: 0001-01-01 to 9999-12-31T23:59:59.999999. */
#define MIN_MICROS (-62135596800LL * 1000000)
#define MAX_MICROS (253402300800LL * 1000000 - 1)

static int64_t
floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* A time in µs from the epoch, within what datetime holds, as an aware UTC datetime
 * (the civil date from days: Howard Hinnant's algorithm). */
static PyObject *
utc_datetime(int64_t micros)
{
    int64_t seconds = floor_div(micros, 1000000), days = floor_div(seconds, 86400);
    int64_t era, rest = seconds - days * 86400, year;
    unsigned day_of_era, year_of_era, day_of_year, shifted, month, day;
    days += 719468;
    era = floor_div(days, 146097);
    day_of_era = (unsigned)(days - era * 146097);
    year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
    day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    shifted = (5 * day_of_year + 2) / 153;
    day = day_of_year - (153 * shifted + 2) / 5 + 1;
    month = shifted < 10 ? shifted + 3 : shifted - 9;
    year = (int64_t)year_of_era + era * 400 + (month <= 2);
    return PyDateTimeAPI->DateTime_FromDateAndTime(
        (int)year, (int)month, (int)day, (int)(rest / 3600), (int)(rest % 3600 / 60),
        (int)(rest % 60), (int)(micros - seconds * 1000000), PyDateTime_TimeZone_UTC,
        PyDateTimeAPI->DateTimeType);
}

/* services/gateway/ingest/translated.py `from_micros`: beyond what datetime holds,
 * its first or last moment (outside every accepted window: validation refuses it). */
static PyObject *
from_micros(int64_t micros)
{
    if (micros < MIN_MICROS)
        return utc_datetime(MIN_MICROS);
    return utc_datetime(micros > MAX_MICROS ? MAX_MICROS : micros);
}

/* services/gateway/otlp/mapping.py `time_of`: the record's time, else the time it was
 * observed, else None; as datetime.fromtimestamp(nanos // 1000 / 1e6, UTC) reads it.
 * Below 2**32 seconds (the year 2106) that float is within half a µs of the µs, so it
 * reads as exactly those µs; later ones are given to fromtimestamp itself. */
static PyObject *
time_of(uint64_t time, uint64_t observed)
{
    uint64_t nanos = time ? time : observed, micros = nanos / 1000;
    PyObject *stamp, *args, *moment;
    if (nanos == 0)
        Py_RETURN_NONE;
    if (micros < ((uint64_t)1 << 32) * 1000000)
        return utc_datetime((int64_t)micros);
    stamp = PyFloat_FromDouble((double)micros / 1e6);
    args = stamp != NULL ? PyTuple_Pack(2, stamp, PyDateTime_TimeZone_UTC) : NULL;
    Py_XDECREF(stamp);
    if (args == NULL)
        return NULL;
    moment = PyDateTimeAPI->DateTime_FromTimestamp((PyObject *)PyDateTimeAPI->DateTimeType,
                                                   args, NULL);
    Py_DECREF(args);
    if (moment == NULL && (PyErr_ExceptionMatches(PyExc_OverflowError) ||
                           PyErr_ExceptionMatches(PyExc_ValueError) ||
                           PyErr_ExceptionMatches(PyExc_OSError))) {
        PyErr_Clear();
        moment = utc_datetime(MAX_MICROS);
    }
    return moment;
}

/* A tuple of `count` new references, handed over: all are released if one is NULL (its
 * exception set) or the tuple cannot be made. */
static PyObject *
tuple_of(Py_ssize_t count, PyObject **items)
{
    PyObject *tuple = NULL;
    Py_ssize_t i;
    for (i = 0; i < count && items[i] != NULL; i++)
        ;
    if (i == count && (tuple = PyTuple_New(count)) != NULL) {
        for (i = 0; i < count; i++)
            PyTuple_SET_ITEM(tuple, i, items[i]);
        return tuple;
    }
    for (i = 0; i < count; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

/* -- OTLP values. ----------------------------------------------------------------- */

enum { ANY_NONE, ANY_STRING, ANY_BOOL, ANY_INT, ANY_DOUBLE, ANY_ARRAY, ANY_KVLIST, ANY_BYTES };

static PyObject *decode_any(const uint8_t *p, const uint8_t *end, int depth);

/* A KeyValue's key and raw value (the last of each); the key checked as UTF-8 always,
 * made a str only when `key` is given. */
static int
read_key_value(Cursor c, PyObject **key, Cursor *value, int depth)
{
    value->p = value->end = c.p;
    while (c.p < c.end) {
        uint32_t field;
        int wire_type;
        if (read_tag(&c, &field, &wire_type) < 0)
            goto error;
        if (field == 1 && wire_type == WT_LEN) {
            PyObject *ignored = NULL;
            if ((key != NULL ? read_name(&c, key) : read_string(&c, &ignored)) < 0)
                goto error;
            Py_XDECREF(ignored);
        } else if (field == 2 && wire_type == WT_LEN) {
            if (read_len(&c, value) < 0)
                goto error;
        } else if (skip_field(&c, field, wire_type, depth) < 0) {
            goto error;
        }
    }
    if (key != NULL && (*key = empty_if_null(*key)) == NULL)
        return -1;
    return 0;
error:
    if (key != NULL)
        Py_CLEAR(*key);
    return -1;
}

/* Phase 1 of a KeyValueList: its KeyValues' structure and keys. */
static int
check_kvlist(Cursor c)
{
    while (c.p < c.end) {
        uint32_t field;
        int wire_type;
        Cursor sub, value;
        if (read_tag(&c, &field, &wire_type) < 0)
            return -1;
        if (field == 1 && wire_type == WT_LEN) {
            if (read_len(&c, &sub) < 0 || read_key_value(sub, NULL, &value, 2) < 0)
                return -1;
        } else if (skip_field(&c, field, wire_type, 1) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Phase 2 of an array (ArrayValue fields from `run` on): its values, appended. */
static int
fill_array(PyObject *list, Cursor c, int depth)
{
    while (c.p < c.end) {
        uint32_t field;
        int wire_type;
        Cursor array, item;
        if (read_tag(&c, &field, &wire_type) < 0)
            return -1;
        if (field != 5 || wire_type != WT_LEN) {
            if (skip_field(&c, field, wire_type, 0) < 0)
                return -1;
            continue;
        }
        if (read_len(&c, &array) < 0)
            return -1;
        while (array.p < array.end) {
            if (read_tag(&array, &field, &wire_type) < 0)
                return -1;
            if (field == 1 && wire_type == WT_LEN) {
                PyObject *value;
                int appended;
                if (read_len(&array, &item) < 0 ||
                    (value = decode_any(item.p, item.end, depth)) == NULL)
                    return -1;
                appended = PyList_Append(list, value);
                Py_DECREF(value);
                if (appended < 0)
                    return -1;
            } else if (skip_field(&array, field, wire_type, 1) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

/* Phase 2 of a key-value list (KeyValueList fields from `run` on): its pairs. */
static int
fill_kvlist(PyObject *dict, Cursor c, int depth)
{
    while (c.p < c.end) {
        uint32_t field;
        int wire_type;
        Cursor kvlist, pair, raw;
        if (read_tag(&c, &field, &wire_type) < 0)
            return -1;
        if (field != 6 || wire_type != WT_LEN) {
            if (skip_field(&c, field, wire_type, 0) < 0)
                return -1;
            continue;
        }
        if (read_len(&c, &kvlist) < 0)
            return -1;
        while (kvlist.p < kvlist.end) {
            if (read_tag(&kvlist, &field, &wire_type) < 0)
                return -1;
            if (field == 1 && wire_type == WT_LEN) {
                PyObject *key = NULL, *value;
                int set;
                if (read_len(&kvlist, &pair) < 0 || read_key_value(pair, &key, &raw, 2) < 0)
                    return -1;
                if ((value = decode_any(raw.p, raw.end, depth)) == NULL) {
                    Py_DECREF(key);
                    return -1;
                }
                set = PyDict_SetItem(dict, key, value);
                Py_DECREF(key);
                Py_DECREF(value);
                if (set < 0)
                    return -1;
            } else if (skip_field(&kvlist, field, wire_type, 1) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

/* One raw AnyValue as a Python value: str, bool, int, float, bytes, list, dict (a
 * key-value list), None (no value). `depth`: the values it is nested in. */
static PyObject *
decode_any(const uint8_t *p, const uint8_t *end, int depth)
{
    Cursor c = {p, end};
    const uint8_t *run = NULL; /* where the current array or key-value list began */
    Cursor bytes = {p, p};
    PyObject *text = NULL, *result = NULL;
    uint64_t scalar = 0;
    int kind = ANY_NONE;
    double number;

    if (p == end)
        Py_RETURN_NONE;
    /* Nearly every value is a string or an integer alone: read straight away. */
    if (end - p > 1 && (p[0] == 0x0A || p[0] == 0x18)) {
        Cursor fast = {p + 1, end}, sub;
        if (p[0] == 0x0A) {
            if (read_len(&fast, &sub) == 0 && sub.end == end)
                return text_of(sub.p, sub.end);
        } else if (read_varint(&fast, &scalar) == 0 && fast.p == end) {
            return PyLong_FromLongLong(as_int64(scalar));
        }
        PyErr_Clear(); /* not alone, or malformed: the full walk says which */
    }
    while (c.p < c.end) {
        const uint8_t *at = c.p;
        uint32_t field;
        int wire_type;
        Cursor sub;
        if (read_tag(&c, &field, &wire_type) < 0)
            goto error;
        switch (field) {
        case 1:
            if (wire_type == WT_LEN) {
                if (read_string(&c, &text) < 0)
                    goto error;
                kind = ANY_STRING;
                continue;
            }
            break;
        case 2:
        case 3:
            if (wire_type == WT_VARINT) {
                if (read_varint(&c, &scalar) < 0)
                    goto error;
                kind = field == 2 ? ANY_BOOL : ANY_INT;
                continue;
            }
            break;
        case 4:
            if (wire_type == WT_I64) {
                if (read_fixed64(&c, &scalar) < 0)
                    goto error;
                kind = ANY_DOUBLE;
                continue;
            }
            break;
        case 5:
        case 6:
            if (wire_type == WT_LEN) {
                int is_array = field == 5;
                if (read_len(&c, &sub) < 0 ||
                    (is_array ? check_fields(sub, 1) : check_kvlist(sub)) < 0)
                    goto error;
                /* A oneof's message seen again is merged; after another member, anew. */
                if (kind != (is_array ? ANY_ARRAY : ANY_KVLIST)) {
                    kind = is_array ? ANY_ARRAY : ANY_KVLIST;
                    run = at;
                }
                continue;
            }
            break;
        case 7:
            if (wire_type == WT_LEN) {
                if (read_len(&c, &bytes) < 0)
                    goto error;
                kind = ANY_BYTES;
                continue;
            }
            break;
        }
        if (skip_field(&c, field, wire_type, 0) < 0)
            goto error;
    }
    switch (kind) {
    case ANY_STRING:
        return text; /* the reference is handed over */
    case ANY_BOOL:
        result = PyBool_FromLong(scalar != 0);
        break;
    case ANY_INT:
        result = PyLong_FromLongLong(as_int64(scalar));
        break;
    case ANY_DOUBLE:
        memcpy(&number, &scalar, sizeof number);
        result = PyFloat_FromDouble(number);
        break;
    case ANY_BYTES:
        result = PyBytes_FromStringAndSize((const char *)bytes.p, bytes.end - bytes.p);
        break;
    case ANY_ARRAY:
    case ANY_KVLIST: {
        Cursor from = {run, end};
        if (depth >= MAX_VALUE_DEPTH) {
            failed("a value is nested too deeply");
            goto error;
        }
        result = kind == ANY_ARRAY ? PyList_New(0) : PyDict_New();
        if (result == NULL)
            goto error;
        if ((kind == ANY_ARRAY ? fill_array(result, from, depth + 1)
                               : fill_kvlist(result, from, depth + 1)) < 0)
            goto error;
        break;
    }
    default:
        result = Py_NewRef(Py_None);
    }
    Py_XDECREF(text);
    return result;
error:
    Py_XDECREF(text);
    Py_XDECREF(result);
    return NULL;
}

/* -- OTLP attributes (a map<string, AnyValue> on the wire). --------------------------- */

/* The attributes being read: a later value of a key replaces the earlier one, which
 * is then never judged; `failures` holds the keys whose last value did not decode. */
typedef struct {
    PyObject *values;
    PyObject *failures;
} Attributes;

static int
add_attribute(Attributes *a, Cursor entry, int depth)
{
    PyObject *key = NULL, *value;
    Cursor raw;
    int done;
    if (read_key_value(entry, &key, &raw, depth) < 0)
        return -1;
    value = decode_any(raw.p, raw.end, 0);
    if (value == NULL) {
        PyObject *type, *error, *traceback;
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
            Py_DECREF(key);
            return -1;
        }
        PyErr_Fetch(&type, &error, &traceback);
        PyErr_NormalizeException(&type, &error, &traceback);
        if (a->failures == NULL)
            a->failures = PyDict_New();
        done = a->failures == NULL ? -1 : PyDict_SetItem(a->failures, key, error);
        Py_XDECREF(type);
        Py_XDECREF(error);
        Py_XDECREF(traceback);
        Py_DECREF(key);
        return done;
    }
    done = a->failures != NULL ? PyDict_Contains(a->failures, key) : 0;
    if (done == 1)
        done = PyDict_DelItem(a->failures, key);
    if (done == 0)
        done = PyDict_SetItem(a->values, key, value);
    Py_DECREF(key);
    Py_DECREF(value);
    return done;
}

/* Once every entry is read: the first failure still standing is raised. */
static int
check_attributes(Attributes *a)
{
    Py_ssize_t position = 0;
    PyObject *key, *error;
    if (a->failures == NULL || !PyDict_Next(a->failures, &position, &key, &error))
        return 0;
    PyErr_SetObject((PyObject *)Py_TYPE(error), error);
    return -1;
}

static PyObject *
otlp_attributes(PyObject *Py_UNUSED(module), PyObject *arg)
{
    Py_buffer view;
    Attributes a = {NULL, NULL};
    Cursor c;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    c.p = view.buf;
    c.end = c.p + view.len;
    if ((a.values = PyDict_New()) == NULL)
        goto error;
    while (c.p < c.end) {
        uint32_t field;
        int wire_type;
        Cursor entry;
        if (read_tag(&c, &field, &wire_type) < 0)
            goto error;
        if (field == 1 && wire_type == WT_LEN) {
            if (read_len(&c, &entry) < 0 || add_attribute(&a, entry, 1) < 0)
                goto error;
        } else if (skip_field(&c, field, wire_type, 0) < 0) {
            goto error;
        }
    }
    if (check_attributes(&a) < 0)
        goto error;
    Py_XDECREF(a.failures);
    PyBuffer_Release(&view);
    return a.values;
error:
    Py_XDECREF(a.values);
    Py_XDECREF(a.failures);
    PyBuffer_Release(&view);
    return NULL;
}

/* -- OTLP logs. --------------------------------------------------------------------- */

typedef struct {
    Py_ssize_t record;   /* the next record's index in the request */
    PyObject *refusal;   /* (reason, record): the first record whose values do not decode */
} Export;

/* A value error of a record is kept, not raised: the request's structure, checked to
 * its end, comes first (as when the structure was parsed before any value). */
static int
keep_refusal(Export *export, Py_ssize_t record)
{
    PyObject *type, *error, *traceback, *reason;
    if (!PyErr_ExceptionMatches(PyExc_ValueError))
        return -1;
    PyErr_Fetch(&type, &error, &traceback);
    if (export->refusal == NULL) {
        PyErr_NormalizeException(&type, &error, &traceback);
        reason = error != NULL ? PyObject_Str(error) : NULL;
        if (reason != NULL) {
            export->refusal = Py_BuildValue("(Nn)", reason, record);
        }
    }
    Py_XDECREF(type);
    Py_XDECREF(error);
    Py_XDECREF(traceback);
    return export->refusal != NULL ? 0 : -1;
}

static const char HEX[] = "0123456789abcdef";

/* An id as lower-case hex; empty or all zeros (invalid in W3C trace context) is None;
 * another length than `size` is an error, as in the Collector. */
static PyObject *
hex_id(Cursor id, Py_ssize_t size, const char *name)
{
    Py_ssize_t length = id.end - id.p, i;
    int zero = 1;
    PyObject *text;
    Py_UCS1 *out;
    if (length == 0)
        Py_RETURN_NONE;
    if (length != size)
        return PyErr_Format(PyExc_ValueError, "%s is %zd bytes, not %zd", name, length, size);
    for (i = 0; i < length; i++)
        zero &= id.p[i] == 0;
    if (zero)
        Py_RETURN_NONE;
    if ((text = PyUnicode_New(2 * length, 127)) == NULL)
        return NULL;
    out = PyUnicode_1BYTE_DATA(text);
    for (i = 0; i < length; i++) {
        out[2 * i] = HEX[id.p[i] >> 4];
        out[2 * i + 1] = HEX[id.p[i] & 15];
    }
    return text;
}

/* One LogRecord appended to `records` as (timestamp, severity_number, severity_text,
 * body, attributes, trace_id, span_id, event_name, dropped_attributes_count, the
 * attributes' size on the wire). Nothing when a value does not decode (kept in
 * `export`: the request is refused). */
static int
log_record(Cursor c, Export *export, PyObject *records)
{
    int status = -1;
    uint64_t time = 0, observed = 0, severity = 0, dropped = 0;
    PyObject *severity_text = NULL, *event_name = NULL, *body = NULL;
    PyObject *trace_id = NULL, *span_id = NULL, *timestamp = NULL;
    Attributes a = {NULL, NULL};
    Cursor raw_body = {c.p, c.p}, trace = {c.p, c.p}, span = {c.p, c.p}, entry;
    Py_ssize_t size = 0;
    if ((a.values = PyDict_New()) == NULL)
        goto error;
    while (c.p < c.end) {
        const uint8_t *at = c.p;
        uint32_t field;
        int wire_type;
        if (read_tag(&c, &field, &wire_type) < 0)
            goto error;
        switch (field) {
        case 1:
        case 11:
            if (wire_type == WT_I64) {
                if (read_fixed64(&c, field == 1 ? &time : &observed) < 0)
                    goto error;
                continue;
            }
            break;
        case 2:
        case 7:
            if (wire_type == WT_VARINT) {
                if (read_varint(&c, field == 2 ? &severity : &dropped) < 0)
                    goto error;
                continue;
            }
            break;
        case 3:
        case 12:
            if (wire_type == WT_LEN) {
                if (read_string(&c, field == 3 ? &severity_text : &event_name) < 0)
                    goto error;
                continue;
            }
            break;
        case 5:
        case 9:
        case 10:
            if (wire_type == WT_LEN) {
                if (read_len(&c, field == 5 ? &raw_body : field == 9 ? &trace : &span) < 0)
                    goto error;
                continue;
            }
            break;
        case 6:
            if (wire_type == WT_LEN) {
                /* A value that does not decode is kept by add_attribute; what fails
                 * here is the entry's structure or its key (not UTF-8). */
                if (read_len(&c, &entry) < 0 || add_attribute(&a, entry, 4) < 0)
                    goto error;
                size += c.p - at;
                continue;
            }
            break;
        }
        if (skip_field(&c, field, wire_type, 3) < 0)
            goto error;
    }
    /* The values, in the order they were judged before: attributes, body, ids. */
    if (check_attributes(&a) < 0 || (body = decode_any(raw_body.p, raw_body.end, 0)) == NULL ||
        (trace_id = hex_id(trace, 16, "trace_id")) == NULL ||
        (span_id = hex_id(span, 8, "span_id")) == NULL) {
        Py_XDECREF(body);
        Py_XDECREF(trace_id);
        if (keep_refusal(export, export->record) < 0)
            goto error;
        status = 0;
        goto done;
    }
    if ((severity_text = empty_if_null(severity_text)) == NULL ||
        (event_name = empty_if_null(event_name)) == NULL ||
        (timestamp = time_of(time, observed)) == NULL) {
        Py_DECREF(body);
        Py_DECREF(trace_id);
        Py_DECREF(span_id);
        goto error;
    }
    {
        PyObject *items[] = {
            timestamp,
            PyLong_FromLong(as_int32(severity)),
            Py_NewRef(severity_text),
            body,
            Py_NewRef(a.values),
            trace_id,
            span_id,
            Py_NewRef(event_name),
            PyLong_FromUnsignedLong((uint32_t)dropped),
            PyLong_FromSsize_t(size),
        };
        PyObject *record = untracked(tuple_of(10, items));
        if (record != NULL) {
            status = PyList_Append(records, record);
            Py_DECREF(record);
        }
    }
done:
    Py_XDECREF(severity_text);
    Py_XDECREF(event_name);
    Py_XDECREF(a.values);
    Py_XDECREF(a.failures);
    return status;
error:
    status = -1;
    goto done;
}

/* One ScopeLogs: its scope's name, and its records appended to `records`. */
static int
scope_logs(Cursor c, Export *export, PyObject **name, PyObject *records)
{
    while (c.p < c.end) {
        uint32_t field;
        int wire_type;
        Cursor sub;
        if (read_tag(&c, &field, &wire_type) < 0)
            return -1;
        if (field == 1 && wire_type == WT_LEN) {
            /* InstrumentationScope: only its name is read. */
            if (read_len(&c, &sub) < 0)
                return -1;
            while (sub.p < sub.end) {
                if (read_tag(&sub, &field, &wire_type) < 0)
                    return -1;
                if (field == 1 && wire_type == WT_LEN) {
                    if (read_string(&sub, name) < 0)
                        return -1;
                } else if (skip_field(&sub, field, wire_type, 3) < 0) {
                    return -1;
                }
            }
        } else if (field == 2 && wire_type == WT_LEN) {
            if (read_len(&c, &sub) < 0 || log_record(sub, export, records) < 0)
                return -1;
            export->record++;
        } else if (skip_field(&c, field, wire_type, 2) < 0) {
            return -1;
        }
    }
    return 0;
}

/* One ResourceLogs: its records appended to `records`, and a (resource, scope name,
 * number of records) tuple per ScopeLogs to `groups`. */
static int
resource_logs(Cursor c, Export *export, PyObject *groups, PyObject *records)
{
    Cursor resource = {c.p, c.p}, sub;
    PyObject *scopes = PyList_New(0), *raw = NULL;
    Py_ssize_t i, count;
    int status = -1;
    if (scopes == NULL)
        return -1;
    while (c.p < c.end) {
        uint32_t field;
        int wire_type;
        if (read_tag(&c, &field, &wire_type) < 0)
            goto done;
        if (field == 1 && wire_type == WT_LEN) {
            if (read_len(&c, &resource) < 0) /* kept raw: decoding.py caches by it */
                goto done;
        } else if (field == 2 && wire_type == WT_LEN) {
            PyObject *name = NULL, *scope;
            Py_ssize_t before = PyList_GET_SIZE(records);
            int appended;
            if (read_len(&c, &sub) < 0 || scope_logs(sub, export, &name, records) < 0 ||
                (name = empty_if_null(name)) == NULL) {
                Py_XDECREF(name);
                goto done;
            }
            {
                PyObject *items[] = {name, PyLong_FromSsize_t(PyList_GET_SIZE(records) - before)};
                scope = tuple_of(2, items);
            }
            if (scope == NULL)
                goto done;
            appended = PyList_Append(scopes, scope);
            Py_DECREF(scope);
            if (appended < 0)
                goto done;
        } else if (skip_field(&c, field, wire_type, 1) < 0) {
            goto done;
        }
    }
    /* The resource may come after its scopes: they get it once all is read. */
    raw = PyBytes_FromStringAndSize((const char *)resource.p, resource.end - resource.p);
    if (raw == NULL)
        goto done;
    count = PyList_GET_SIZE(scopes);
    for (i = 0; i < count; i++) {
        PyObject *scope = PyList_GET_ITEM(scopes, i), *group;
        int appended;
        group = PyTuple_Pack(3, raw, PyTuple_GET_ITEM(scope, 0), PyTuple_GET_ITEM(scope, 1));
        if (group == NULL)
            goto done;
        appended = PyList_Append(groups, group);
        Py_DECREF(group);
        if (appended < 0)
            goto done;
    }
    status = 0;
done:
    Py_XDECREF(raw);
    Py_DECREF(scopes);
    return status;
}

/* A ValueError of the structure: (reason, None), as a record's is (reason, index). */
static void
structural(void)
{
    PyObject *type, *error, *traceback, *reason, *args;
    if (!PyErr_ExceptionMatches(PyExc_ValueError))
        return;
    PyErr_Fetch(&type, &error, &traceback);
    PyErr_NormalizeException(&type, &error, &traceback);
    reason = error != NULL ? PyObject_Str(error) : NULL;
    args = reason != NULL ? Py_BuildValue("(NO)", reason, Py_None) : NULL;
    Py_XDECREF(type);
    Py_XDECREF(error);
    Py_XDECREF(traceback);
    if (args != NULL) {
        PyErr_SetObject(PyExc_ValueError, args);
        Py_DECREF(args);
    }
}

/* (groups, records): a (resource bytes, scope name, number of records) per ScopeLogs,
 * and every record, in order. One list of records for the whole request rather than
 * one per ScopeLogs: a collector sends hundreds of resources per request, and each
 * list is one more object for the garbage collector to count. */
static PyObject *
otlp_logs(PyObject *Py_UNUSED(module), PyObject *arg)
{
    Py_buffer view;
    Export export = {0, NULL};
    PyObject *out = NULL, *groups = NULL, *records = NULL;
    Cursor c, sub;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    c.p = view.buf;
    c.end = c.p + view.len;
    strings_held_nul = 0;
    if ((groups = PyList_New(0)) == NULL || (records = PyList_New(0)) == NULL)
        goto error;
    while (c.p < c.end) {
        uint32_t field;
        int wire_type;
        if (read_tag(&c, &field, &wire_type) < 0)
            goto error;
        if (field == 1 && wire_type == WT_LEN) {
            if (read_len(&c, &sub) < 0 || resource_logs(sub, &export, groups, records) < 0)
                goto error;
        } else if (skip_field(&c, field, wire_type, 0) < 0) {
            goto error;
        }
    }
    if (export.refusal != NULL)
        PyErr_SetObject(PyExc_ValueError, export.refusal);
    else
        out = Py_BuildValue("(OOO)", groups, records, strings_held_nul ? Py_True : Py_False);
    Py_XDECREF(groups);
    Py_XDECREF(records);
    Py_XDECREF(export.refusal);
    PyBuffer_Release(&view);
    return out;
error:
    structural();
    Py_XDECREF(groups);
    Py_XDECREF(records);
    Py_XDECREF(export.refusal);
    PyBuffer_Release(&view);
    return NULL;
}

/* -- Loki. -------------------------------------------------------------------------- */

/* seconds * 1e6 + floor(nanos / 1000) as a datetime; seconds this far from the epoch
 * are beyond what datetime holds whatever the nanos. */
static PyObject *
loki_time(int64_t seconds, int32_t nanos)
{
    if (seconds <= -9000000000000LL)
        return from_micros(MIN_MICROS - 1);
    if (seconds >= 9000000000000LL)
        return from_micros(MAX_MICROS + 1);
    return from_micros(seconds * 1000000 + floor_div(nanos, 1000));
}

/* A LabelPairAdapter: its name and value, appended to `flat`. */
static int
label_pair(Cursor c, PyObject *flat)
{
    PyObject *name = NULL, *value = NULL;
    int status = -1;
    while (c.p < c.end) {
        uint32_t field;
        int wire_type;
        if (read_tag(&c, &field, &wire_type) < 0)
            goto done;
        if ((field == 1 || field == 2) && wire_type == WT_LEN) {
            if ((field == 1 ? read_name(&c, &name) : read_string(&c, &value)) < 0)
                goto done;
        } else if (skip_field(&c, field, wire_type, 3) < 0) {
            goto done;
        }
    }
    if ((name = empty_if_null(name)) != NULL && (value = empty_if_null(value)) != NULL &&
        PyList_Append(flat, name) == 0 && PyList_Append(flat, value) == 0)
        status = 0;
done:
    Py_XDECREF(name);
    Py_XDECREF(value);
    return status;
}

/* An EntryAdapter as (timestamp, line, structured metadata or None); the structured
 * metadata flat, (name, value, name, value, ...): a tuple per pair would be a dozen
 * more objects per line for the collector to count. */
static PyObject *
loki_entry(Cursor c)
{
    uint64_t seconds = 0, nanos = 0;
    PyObject *line = NULL, *pairs = NULL, *structured = NULL, *timestamp, *entry = NULL;
    while (c.p < c.end) {
        uint32_t field;
        int wire_type;
        Cursor sub;
        if (read_tag(&c, &field, &wire_type) < 0)
            goto done;
        if (field == 1 && wire_type == WT_LEN) {
            /* google.protobuf.Timestamp; seen twice, merged. */
            if (read_len(&c, &sub) < 0)
                goto done;
            while (sub.p < sub.end) {
                if (read_tag(&sub, &field, &wire_type) < 0)
                    goto done;
                if ((field == 1 || field == 2) && wire_type == WT_VARINT) {
                    if (read_varint(&sub, field == 1 ? &seconds : &nanos) < 0)
                        goto done;
                } else if (skip_field(&sub, field, wire_type, 3) < 0) {
                    goto done;
                }
            }
        } else if (field == 2 && wire_type == WT_LEN) {
            if (read_string(&c, &line) < 0)
                goto done;
        } else if (field == 3 && wire_type == WT_LEN) {
            if (read_len(&c, &sub) < 0)
                goto done;
            if (pairs == NULL && (pairs = PyList_New(0)) == NULL)
                goto done;
            if (label_pair(sub, pairs) < 0)
                goto done;
        } else if (skip_field(&c, field, wire_type, 2) < 0) {
            goto done;
        }
    }
    if ((line = empty_if_null(line)) == NULL)
        goto done;
    if (pairs != NULL && (structured = untracked(PyList_AsTuple(pairs))) == NULL)
        goto done;
    timestamp = loki_time(as_int64(seconds), as_int32(nanos));
    {
        PyObject *items[] = {
            timestamp, Py_NewRef(line), Py_NewRef(structured != NULL ? structured : Py_None)};
        entry = untracked(tuple_of(3, items));
    }
done:
    Py_XDECREF(line);
    Py_XDECREF(pairs);
    Py_XDECREF(structured);
    return entry;
}

/* A StreamAdapter as (labels, [entry, ...]). */
static PyObject *
loki_stream(Cursor c)
{
    PyObject *labels = NULL, *entries = PyList_New(0), *stream = NULL;
    if (entries == NULL)
        return NULL;
    while (c.p < c.end) {
        uint32_t field;
        int wire_type;
        Cursor sub;
        if (read_tag(&c, &field, &wire_type) < 0)
            goto done;
        if (field == 1 && wire_type == WT_LEN) {
            if (read_string(&c, &labels) < 0)
                goto done;
        } else if (field == 2 && wire_type == WT_LEN) {
            PyObject *entry;
            int appended;
            if (read_len(&c, &sub) < 0 || (entry = loki_entry(sub)) == NULL)
                goto done;
            appended = PyList_Append(entries, entry);
            Py_DECREF(entry);
            if (appended < 0)
                goto done;
        } else if (skip_field(&c, field, wire_type, 1) < 0) {
            goto done;
        }
    }
    if ((labels = empty_if_null(labels)) != NULL)
        stream = PyTuple_Pack(2, labels, entries);
done:
    Py_XDECREF(labels);
    Py_DECREF(entries);
    return stream;
}

static PyObject *
loki_push(PyObject *Py_UNUSED(module), PyObject *arg)
{
    Py_buffer view;
    PyObject *out;
    Cursor c, sub;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    c.p = view.buf;
    c.end = c.p + view.len;
    if ((out = PyList_New(0)) == NULL)
        goto error;
    while (c.p < c.end) {
        uint32_t field;
        int wire_type;
        if (read_tag(&c, &field, &wire_type) < 0)
            goto error;
        if (field == 1 && wire_type == WT_LEN) {
            PyObject *stream;
            int appended;
            if (read_len(&c, &sub) < 0 || (stream = loki_stream(sub)) == NULL)
                goto error;
            appended = PyList_Append(out, stream);
            Py_DECREF(stream);
            if (appended < 0)
                goto error;
        } else if (skip_field(&c, field, wire_type, 0) < 0) {
            goto error;
        }
    }
    PyBuffer_Release(&view);
    return out;
error:
    Py_XDECREF(out);
    PyBuffer_Release(&view);
    return NULL;
}

/* -- Loki entries → LogEntryIn. ---------------------------------------------------- */

/* Whether a str holds NUL (PostgreSQL text cannot). */
static int
holds_nul(PyObject *text)
{
    return PyUnicode_FindChar(text, 0, 0, PyUnicode_GET_LENGTH(text), 1) >= 0;
}

/* One stream's entries as LogEntryIn, appended to `out`: the loop of loki/translate.py's
 * Translator.entries, whose docstrings say what each step means. `arguments` holds the
 * stream's LogEntryIn arguments; `layout` the positions of (timestamp, message, level,
 * metadata) among them; `positions` maps a structured-metadata name to the position of
 * the field it fills, whose longest value is at that index of `bounds`. Returns whether
 * every value is within its bound and, when `check_nul`, holds no NUL. */
static PyObject *
loki_entries(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *entries, *template, *positions, *bounds, *level_keys, *level_name;
    PyObject *stream_metadata, *entry_type, *out, *seq = NULL, *result = NULL;
    Py_ssize_t at_time, at_message, at_level, at_metadata, count, width, i;
    int check_nul, fits = 1;
    PyObject *base[32];
    if (!PyArg_ParseTuple(args, "OO!O!O!OOOOO!p(nnnn):loki_entries", &entries,
                          &PyList_Type, &template, &PyDict_Type, &positions, &PyTuple_Type,
                          &bounds, &level_keys, &level_name, &stream_metadata, &entry_type,
                          &PyList_Type, &out, &check_nul, &at_time, &at_message, &at_level,
                          &at_metadata))
        return NULL;
    width = PyList_GET_SIZE(template);
    if (width > 32 || PyTuple_GET_SIZE(bounds) != width || at_time < 0 || at_time >= width
        || at_message < 0 || at_message >= width || at_level < 0 || at_level >= width
        || at_metadata < 0 || at_metadata >= width) {
        PyErr_SetString(PyExc_ValueError, "loki_entries: layout does not fit the arguments");
        return NULL;
    }
    for (i = 0; i < width; i++)
        base[i] = PyList_GET_ITEM(template, i);
    if ((seq = PySequence_Fast(entries, "entries must be a sequence")) == NULL)
        return NULL;
    count = PySequence_Fast_GET_SIZE(seq);
    for (i = 0; i < count; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i), *structured, *pairs = NULL;
        PyObject *argv[32], *owned_level = NULL, *metadata = NULL, *entry;
        Py_ssize_t k, n;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3
            || !PyUnicode_Check(PyTuple_GET_ITEM(item, 1))) {
            PyErr_SetString(PyExc_TypeError, "an entry is (timestamp, line, structured)");
            goto done;
        }
        memcpy(argv, base, sizeof(PyObject *) * width);
        argv[at_time] = PyTuple_GET_ITEM(item, 0);
        argv[at_message] = PyTuple_GET_ITEM(item, 1);
        if (check_nul && holds_nul(argv[at_message]))
            fits = 0;
        structured = PyTuple_GET_ITEM(item, 2);
        if (structured != Py_None) {
            if ((pairs = PySequence_Fast(structured, "structured metadata")) == NULL)
                goto done;
            n = PySequence_Fast_GET_SIZE(pairs);
            if (n % 2) {
                PyErr_SetString(PyExc_ValueError, "structured metadata comes in pairs");
                goto entry_failed;
            }
            for (k = 0; k < n; k += 2) {
                PyObject *name = PySequence_Fast_GET_ITEM(pairs, k);
                PyObject *value = PySequence_Fast_GET_ITEM(pairs, k + 1), *position;
                int level_key;
                if (!PyUnicode_Check(name) || !PyUnicode_Check(value)) {
                    PyErr_SetString(PyExc_TypeError, "structured metadata is text");
                    goto entry_failed;
                }
                position = PyDict_GetItemWithError(positions, name);
                if (position == NULL && PyErr_Occurred())
                    goto entry_failed;
                if (position != NULL && PyUnicode_GET_LENGTH(value) > 0) {
                    Py_ssize_t at = PyLong_AsSsize_t(position), bound;
                    if (at < 0 || at >= width) {
                        if (!PyErr_Occurred())
                            PyErr_SetString(PyExc_ValueError, "a position out of range");
                        goto entry_failed;
                    }
                    bound = PyLong_AsSsize_t(PyTuple_GET_ITEM(bounds, at));
                    if (bound == -1 && PyErr_Occurred())
                        goto entry_failed;
                    argv[at] = value;
                    if (PyUnicode_GET_LENGTH(value) > bound)
                        fits = 0;
                    continue;
                }
                if ((level_key = PySet_Contains(level_keys, name)) < 0)
                    goto entry_failed;
                if (level_key) {
                    PyObject *known = PyObject_CallOneArg(level_name, value);
                    if (known == NULL)
                        goto entry_failed;
                    if (known != Py_None) {
                        Py_XSETREF(owned_level, known);
                        argv[at_level] = known;
                        continue;
                    }
                    Py_DECREF(known);
                }
                if (metadata == NULL) {
                    metadata = PyDict_Check(stream_metadata) && PyDict_GET_SIZE(stream_metadata)
                                   ? PyDict_Copy(stream_metadata)
                                   : PyDict_New();
                    if (metadata == NULL)
                        goto entry_failed;
                }
                if (PyDict_SetItem(metadata, name, value) < 0)
                    goto entry_failed;
            }
            if (metadata != NULL)
                argv[at_metadata] = metadata;
            /* NUL is looked for in what the entry ends with (a value replaced by a later
             * one of the same name does not count); the stream's own values were looked
             * at with its labels. */
            if (check_nul && fits) {
                Py_ssize_t at, cursor = 0;
                PyObject *key, *value;
                for (at = 0; at < width && fits; at++)
                    if (argv[at] != base[at] && PyUnicode_Check(argv[at]) && holds_nul(argv[at]))
                        fits = 0;
                while (metadata != NULL && fits && PyDict_Next(metadata, &cursor, &key, &value))
                    if ((PyUnicode_Check(key) && holds_nul(key))
                        || (PyUnicode_Check(value) && holds_nul(value)))
                        fits = 0;
            }
        }
        entry = PyObject_Vectorcall(entry_type, argv, width, NULL);
        if (entry == NULL || PyList_Append(out, entry) < 0) {
            Py_XDECREF(entry);
            goto entry_failed;
        }
        Py_DECREF(entry);
        Py_XDECREF(pairs);
        Py_XDECREF(owned_level);
        Py_XDECREF(metadata);
        continue;
    entry_failed:
        Py_XDECREF(pairs);
        Py_XDECREF(owned_level);
        Py_XDECREF(metadata);
        goto done;
    }
    result = Py_NewRef(fits ? Py_True : Py_False);
done:
    Py_DECREF(seq);
    return result;
}

/* -- The module. -------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"otlp_logs", otlp_logs, METH_O,
     "An ExportLogsServiceRequest: ([(resource bytes, scope name, records), ...], "
     "[record, ...], whether a string of theirs holds NUL)."},
    {"otlp_attributes", otlp_attributes, METH_O,
     "The attributes of a raw OTLP Resource, as a dict."},
    {"loki_push", loki_push, METH_O,
     "A logproto.PushRequest: a (labels, entries) per stream."},
    {"loki_entries", loki_entries, METH_VARARGS,
     "One Loki stream's entries as LogEntryIn, appended to a list; whether all fit."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_protowire",
    "The protobuf wire format of the ingest requests, in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__protowire(void)
{
    PyObject *module;
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return NULL;
    module = PyModule_Create(&module_def);
    if (module != NULL && PyModule_AddIntConstant(module, "MAX_VALUE_DEPTH", MAX_VALUE_DEPTH) < 0)
        Py_CLEAR(module);
    return module;
}
