package jobstore

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Fuzz targets for the code that reads what others wrote (records, times,
// numbers) and the code that checks what callers give. None may ever
// panic. Each also checks a property that ties it to the rest of the
// library. `go test` runs the seeds; .ci/run fuzzes each briefly:
//
//	go test -run '^$' -fuzz '^FuzzDecodeJob$' -fuzztime 10s .

// FuzzDecodeJob feeds decodeJob records with arbitrary field values. A
// record with its id is always read: values it cannot read get defaults
// and are listed in Unreadable with their raw value; fields it does not
// know are kept in Extra. Only a missing or foreign id is refused, with
// ErrCorruptRecord.
func FuzzDecodeJob(f *testing.F) {
	f.Add("abc123", "abc123", "pending", "50", "0", "2026-11-28T12:00:00.000Z", `{"a":1}`, "trace_id", "t-1")
	f.Add("x", "x", "in_progress", "", "", "1700000000000", "", "", "")
	f.Add("x", "x", "sleeping", "NaN", "-1", "1764457200.123456", "{", "status", "x")
	f.Add("x", "", "", "９", "0x10", "2026-13-45T25:61:61Z", "null", "id", "other")
	f.Add("x", "x", "failed", "99999999999999999999", "3", "99999999999999999999", `"\ud800"`, "k", "\xff")
	f.Fuzz(func(t *testing.T, id, idField, status, priority, retries, created, payload, key, value string) {
		h := map[string]string{fID: idField, fStatus: status, fPriority: priority,
			fRetryCount: retries, fCreatedAt: created, fPayload: payload}
		h[key] = value
		j, err := decodeJob(id, h)
		if err != nil {
			if !errors.Is(err, ErrCorruptRecord) {
				t.Fatalf("error does not wrap ErrCorruptRecord: %v", err)
			}
			if h[fID] == id && id != "" {
				t.Fatalf("refused a record with its own id: %v", err)
			}
			return
		}
		if j.ID != id || h[fID] != id {
			t.Fatalf("accepted a record of another id: %+v from %q", j, h)
		}
		if !knownFields[key] && j.Extra[key] != value {
			t.Fatalf("unknown field %q=%q not kept in Extra: %q", key, value, j.Extra)
		}
		if len(j.Payload) > 0 && !json.Valid(j.Payload) {
			t.Fatalf("accepted invalid JSON payload %q", j.Payload)
		}
		for name, raw := range j.Unreadable {
			if h[name] != raw {
				t.Fatalf("Unreadable[%q]=%q, the record has %q", name, raw, h[name])
			}
		}
		if _, bad := j.Unreadable[fPriority]; bad && j.Priority != DefaultPriority {
			t.Fatalf("unreadable priority %q gave %d, want the default", priority, j.Priority)
		}
	})
}

// FuzzParseTime: any text either parses to Unix ms that formatTime writes
// back in a form that parses to the same millisecond, or is refused.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{
		"2026-11-28T12:00:00.000Z", "2026-11-28T12:00:00Z", "2026-11-28T12:00:00+01:00",
		"2026-11-28T12:00:00.123456789-0530", "2026-11-28 12:00:00", "2026-11-28", "1764457200.123456",
		"1700000000000", "0", "", "9223372036854775808", "-1", "2026-02-30T00:00:00Z", "0000-01-01T00:00:00Z",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ms, ok := parseTimeMs(s)
		if !ok {
			return
		}
		tm := time.UnixMilli(ms).UTC()
		if y := tm.Year(); y < 1 || y > 9999 {
			return // formatTime writes four-digit years only
		}
		back, ok := parseTimeMs(formatTime(tm))
		if !ok || back != ms {
			t.Fatalf("parseTimeMs(formatTime(%v)) from %q = %d, %v; want %d", tm, s, back, ok, ms)
		}
	})
}

// FuzzParseInt: parseIntJS reads what JavaScript's parseInt reads and
// never gives a value beyond ±2^53 or NaN.
func FuzzParseInt(f *testing.F) {
	for _, s := range []string{"50", " -7", "+3", "NaN", "1e21", "9007199254740993", "", "0x10", "12abc", "-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, ok := parseIntJS(s)
		if !ok {
			return
		}
		if v != v || v > 1<<53 || v < -(1<<53) {
			t.Fatalf("parseIntJS(%q) = %v", s, v)
		}
		if v != float64(int64(v)) {
			t.Fatalf("parseIntJS(%q) = %v is not an integer", s, v)
		}
	})
}

// FuzzValidateID: an id is accepted exactly when it is a usable key part:
// valid UTF-8 of 1 to MaxIDLength bytes without white space, control
// characters or any of *?[]{}:\, and then it is its own record key's id.
func FuzzValidateID(f *testing.F) {
	for _, s := range []string{"abc", "a:b", "", "a b", "\xff", "日本", "a*", strings.Repeat("x", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := validateID(id)
		if err != nil {
			if !errors.Is(err, ErrInvalidID) {
				t.Fatalf("error does not wrap ErrInvalidID: %v", err)
			}
			return
		}
		if id == "" || len(id) > MaxIDLength || !utf8.ValidString(id) || strings.ContainsAny(id, "*?[]{}:\\ \t\r\n") {
			t.Fatalf("accepted %q", id)
		}
		got, suffix, ok := keyspace{prefix: "p:", ns: StepNamespace}.parseRecordKey("p:step:" + id)
		if !ok || got != id || suffix != "" {
			t.Fatalf("record key of %q parses as %q %q %v", id, got, suffix, ok)
		}
	})
}

// FuzzSubmitRecord: a job SubmitJob accepts is written as fields that
// decode back to the same job, with nothing unreadable.
func FuzzSubmitRecord(f *testing.F) {
	f.Add("id1", "svc", 50, `{"a":1}`, `{"hardware":{"gpu_memory_gb":8}}`, "cust", "wf", 3, 1, 2, "k", "v")
	f.Add("", "s", 0, "", "", "", "", 0, 0, 0, "", "")
	f.Add("x", "s", 1000, "null", "[]", "\xff", "w", 1000, 1, 1, "status", "done")
	f.Fuzz(func(t *testing.T, id, service string, priority int, payload, reqs, customer, workflow string,
		wprio, step, total int, key, value string) {
		j := Job{ID: id, Service: service, Priority: priority, Payload: json.RawMessage(payload),
			Requirements: json.RawMessage(reqs), CustomerID: customer, WorkflowID: workflow,
			WorkflowPriority: wprio, CurrentStep: step, TotalSteps: total}
		if key != "" {
			j.Extra = map[string]string{key: value}
		}
		now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
		j = withDefaults(j, now)
		if err := validateSubmit(&j, DefaultMaxPayloadBytes); err != nil {
			return
		}
		f := submitRecord(&j)
		h := map[string]string{}
		for i := 0; i+1 < len(f); i += 2 {
			h[f[i].(string)] = f[i+1].(string)
		}
		back, err := decodeJob(j.ID, h)
		if err != nil {
			t.Fatalf("submitted record does not decode: %v", err)
		}
		if len(back.Unreadable) > 0 {
			t.Fatalf("submitted record has unreadable fields %q", back.Unreadable)
		}
		if back.Priority != j.Priority || back.Service != j.Service || back.WorkflowPriority != j.WorkflowPriority ||
			back.CurrentStep != j.CurrentStep || back.TotalSteps != j.TotalSteps || !back.CreatedAt.Equal(j.CreatedAt) {
			t.Fatalf("round trip changed the job: %+v → %+v", j, back)
		}
	})
}

// FuzzCapabilities: capabilities either are refused or marshal to JSON an
// object whose job_service_required_map is the services.
func FuzzCapabilities(f *testing.F) {
	f.Add("w1", "comfyui", "region", "eu")
	f.Add("", "", "", "")
	f.Add("w", "s", "hardware", "x")
	f.Fuzz(func(t *testing.T, worker, service, key, value string) {
		c := Capabilities{WorkerID: worker, Services: []string{service}}
		if key != "" {
			c.Extra = map[string]any{key: value}
		}
		b, err := c.validate()
		if err != nil {
			return
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("capabilities JSON %s: %v", b, err)
		}
		if svc, _ := m["job_service_required_map"].([]any); len(svc) != 1 || svc[0] != service {
			t.Fatalf("services lost in %s", b)
		}
	})
}

// FuzzParseFlag: the flag parser accepts exactly its words, in any case.
func FuzzParseFlag(f *testing.F) {
	for _, s := range []string{"true", "FALSE", " on ", "1", "2", "yes", "enabled", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseFlag(s)
		w := strings.ToLower(strings.TrimSpace(s))
		switch w {
		case "true", "1", "yes", "on":
			if err != nil || !v {
				t.Fatalf("parseFlag(%q) = %v, %v", s, v, err)
			}
		case "false", "0", "no", "off":
			if err != nil || v {
				t.Fatalf("parseFlag(%q) = %v, %v", s, v, err)
			}
		default:
			if err == nil {
				t.Fatalf("parseFlag(%q) accepted", s)
			}
		}
	})
}
