package jobstore

import (
	"encoding/json"
	"errors"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Fuzz targets for the code that reads what others wrote (record decoding)
// and the code that checks what callers give (input validation). None may
// ever panic. Each also checks a property that ties it to the rest of the
// library. `go test` runs the seeds; .ci/run fuzzes each briefly:
//
//	go test -run '^$' -fuzz '^FuzzDecodeJob$' -fuzztime 10s .

// FuzzDecodeJob feeds decodeJob records with arbitrary field values. A
// record it accepts has a known status, a service and its id; every field
// it does not know is kept in Extra. A record it refuses gives
// ErrCorruptRecord.
func FuzzDecodeJob(f *testing.F) {
	f.Add("abc123", "pending", "comfyui", "50", "0", "2026-11-28T12:00:00.000Z", `{"a":1}`, "trace_id", "t-1")
	f.Add("x", "in_progress", "s", "", "", "1700000000000", "", "", "")
	f.Add("x", "sleeping", "s", "1e3", "-1", "2026-11-28 12:00:00+0100", "{", "status", "x")
	f.Add("", "", "", "９", "0x10", "2026-13-45T25:61:61Z", "null", "id", "other")
	f.Add("x", "failed", "s", "99999999999999999999", "3", "99999999999999999999", `"\ud800"`, "k", "\xff")
	f.Fuzz(func(t *testing.T, id, status, service, priority, retries, created, payload, key, value string) {
		h := map[string]string{
			fStatus: status, fService: service, fPriority: priority,
			fRetryCount: retries, fCreatedAt: created, fPayload: payload,
		}
		h[key] = value
		j, err := decodeJob(id, h)
		if err != nil {
			if !errors.Is(err, ErrCorruptRecord) {
				t.Fatalf("error does not wrap ErrCorruptRecord: %v", err)
			}
			return
		}
		if j.ID != id || !j.Status.Valid() || j.Service == "" || j.Service != h[fService] {
			t.Fatalf("accepted a record it should not have: %+v from %q", j, h)
		}
		if !knownFields[key] && j.Extra[key] != value {
			t.Fatalf("unknown field %q=%q not kept in Extra: %q", key, value, j.Extra)
		}
		if len(j.Payload) > 0 && !json.Valid(j.Payload) {
			t.Fatalf("accepted invalid JSON payload %q", j.Payload)
		}
	})
}

// FuzzParseTime: any text either parses to a UTC time that formatTime
// writes back in a form parseTime reads to the same millisecond, or is an
// error.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{
		"2026-11-28T12:00:00.000Z", "2026-11-28T12:00:00Z", "2026-11-28T12:00:00+01:00",
		"2026-11-28T12:00:00.123456789-0530", "2026-11-28 12:00:00", "2026-11-28T12:00:00",
		"1700000000000", "0", "", "9223372036854775808", "-1", "2026-02-30T00:00:00Z", "0000-01-01T00:00:00Z",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseTime(s)
		if err != nil {
			return
		}
		if got.Location() != time.UTC {
			t.Fatalf("parseTime(%q) is in %v, want UTC", s, got.Location())
		}
		if y := got.Year(); y < 0 || y > 9999 {
			return // formatTime writes four-digit years only
		}
		back, err := parseTime(formatTime(got))
		if err != nil {
			t.Fatalf("parseTime(formatTime(%v)) from %q: %v", got, s, err)
		}
		if !back.Equal(got.Truncate(time.Millisecond)) {
			t.Fatalf("%q: %v formatted and parsed is %v", s, got, back)
		}
	})
}

// FuzzValidateID: an id validateID accepts names exactly one record key,
// from which idFromRecordKey gives it back, and its sub-keys are never
// taken for records.
func FuzzValidateID(f *testing.F) {
	for _, s := range []string{"abc123", "0b6ec6a6-e3f1-4737-960b-5d1354236995", "a:b", "a*", "{x}", "a b",
		"a\x00", "\xff", "é", strings.Repeat("a", 128), strings.Repeat("a", 129), "\u2028", "a\\b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if err := validateID(id); err != nil {
			if !errors.Is(err, ErrInvalidID) {
				t.Fatalf("error does not wrap ErrInvalidID: %v", err)
			}
			return
		}
		if id == "" || len(id) > MaxIDLength || !utf8.ValidString(id) || strings.ContainsAny(id, ":*?[]{}\\ \n") {
			t.Fatalf("accepted id %q", id)
		}
		for _, k := range []keyspace{{ns: JobNamespace}, {prefix: "p:", ns: StepNamespace}} {
			if got, ok := k.idFromRecordKey(k.record(id)); !ok || got != id {
				t.Fatalf("idFromRecordKey(%q) = %q, %v", k.record(id), got, ok)
			}
			if _, ok := k.idFromRecordKey(k.record(id) + ":progress"); ok {
				t.Fatalf("sub-key of %q taken for a record", id)
			}
		}
	})
}

// FuzzNewRecord: a Job that newRecord accepts gives a record that
// decodeJob reads back to the same job, so SubmitJob never writes what
// GetJob cannot read. A Job it refuses gives an error wrapping one of the
// input sentinels.
func FuzzNewRecord(f *testing.F) {
	f.Add("abc123", "comfyui", 50, 0, 3, []byte(`{"prompt":"a cat"}`), []byte(`{"gpu":true}`), "cust", "trace_id", "t", int64(0), int64(0))
	f.Add("", "s", 0, 70, 0, []byte(""), []byte(""), "", "", "", int64(1700000000000), int64(1600000000000))
	f.Add("a:b", " ", -1, 1001, -1, []byte("{"), []byte("x"), "\xff", "status", "x", int64(-1), int64(-1))
	f.Add("x", "s", 1000, 0, 1000, []byte(" {} "), []byte("null"), "", "k", "\xff", int64(253402300800000), int64(-62135596800000))
	f.Fuzz(func(t *testing.T, id, service string, priority, wfPriority, maxRetries int, payload, requirements []byte,
		customer, extraKey, extraValue string, createdMs, workflowMs int64) {
		j := Job{ID: id, Service: service, Priority: priority, WorkflowPriority: wfPriority, MaxRetries: maxRetries,
			Payload: payload, Requirements: requirements, CustomerID: customer}
		if extraKey != "" {
			j.Extra = map[string]string{extraKey: extraValue}
		}
		if createdMs != 0 {
			j.CreatedAt = time.UnixMilli(createdMs)
		}
		if workflowMs != 0 {
			j.WorkflowDatetime = time.UnixMilli(workflowMs)
		}
		if j.ID == "" {
			j.ID = "generated"
		}
		now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
		fields, err := newRecord(&j, now, 1<<10)
		if err != nil {
			for _, s := range []error{ErrInvalidID, ErrInvalidService, ErrInvalidPriority, ErrInvalidPayload,
				ErrPayloadTooLarge, ErrInvalidMaxRetries, ErrInvalidArgument} {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("error wraps no input sentinel: %v", err)
		}
		h := make(map[string]string, len(fields)/2)
		for i := 0; i+1 < len(fields); i += 2 {
			k, ok1 := fields[i].(string)
			v, ok2 := fields[i+1].(string)
			if !ok1 || !ok2 {
				t.Fatalf("field %d is not a string pair: %#v, %#v", i/2, fields[i], fields[i+1])
			}
			if _, dup := h[k]; dup {
				t.Fatalf("field %q written twice", k)
			}
			h[k] = v
		}
		got, err := decodeJob(j.ID, h)
		if err != nil {
			t.Fatalf("SubmitJob would write a record GetJob cannot read: %v\nfields %q", err, fields)
		}
		want := j
		want.Status, want.RetryCount = StatusPending, 0
		if want.MaxRetries == 0 {
			want.MaxRetries = DefaultMaxRetries
		}
		if len(strings.TrimSpace(string(want.Payload))) == 0 {
			want.Payload = json.RawMessage("{}")
		}
		if len(want.Requirements) == 0 {
			want.Requirements = nil
		}
		if want.CreatedAt.IsZero() {
			want.CreatedAt = now
		}
		switch {
		case got.Service != want.Service, got.Priority != want.Priority, got.WorkflowPriority != want.WorkflowPriority,
			got.MaxRetries != want.MaxRetries, got.Status != want.Status, got.CustomerID != want.CustomerID,
			string(got.Payload) != string(want.Payload), string(got.Requirements) != string(want.Requirements),
			!got.CreatedAt.Equal(want.CreatedAt.Truncate(time.Millisecond)),
			!got.WorkflowDatetime.Equal(want.WorkflowDatetime.Truncate(time.Millisecond)),
			!maps.Equal(got.Extra, want.Extra):
			t.Fatalf("read back differs:\n got %+v\nwant %+v", got, want)
		}
	})
}

// FuzzParseFlag: ParseFlag ignores case and surrounding space, and an
// error quotes the value it could not read.
func FuzzParseFlag(f *testing.F) {
	for _, s := range []string{"true", "FALSE", " on ", "Off", "1", "0", "yes", "NO", "", "ture", "2", "\xff", "tRuE\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseFlag(s)
		if err != nil {
			if !strings.Contains(err.Error(), strconv.Quote(s)) {
				t.Fatalf("error %q does not quote the value %q", err, s)
			}
			return
		}
		for _, variant := range []string{strings.ToUpper(s), strings.ToLower(s), " " + s + "\t"} {
			if w, err := ParseFlag(variant); err != nil || w != v {
				t.Fatalf("ParseFlag(%q) = %v, but ParseFlag(%q) = %v, %v", s, v, variant, w, err)
			}
		}
		if w, err := ParseFlag(strconv.FormatBool(v)); err != nil || w != v {
			t.Fatalf("ParseFlag(%q) does not read back %v", strconv.FormatBool(v), v)
		}
	})
}
