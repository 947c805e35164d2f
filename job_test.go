package jobstore

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseTime(t *testing.T) {
	want := time.Date(2026, 11, 28, 12, 0, 0, 123e6, time.UTC)
	for _, s := range []string{
		"2026-11-28T12:00:00.123Z",
		"2026-11-28T13:00:00.123+01:00",
		"2026-11-28T07:30:00.123-04:30",
		"2026-11-28T12:00:00.123",
		"2026-11-28 12:00:00.123",
		"1795867200123",
	} {
		got, err := parseTime(s)
		require.NoError(t, err, s)
		require.True(t, want.Equal(got), "%s: got %v", s, got)
	}
	for _, s := range []string{"", "yesterday", "2026-13-01T00:00:00Z", "12:00", "99999999999999999999"} {
		_, err := parseTime(s)
		require.Error(t, err, s)
	}
	require.Equal(t, "2026-11-28T12:00:00.123Z", formatTime(want.In(time.FixedZone("x", 3600))))
}

func TestValidateID(t *testing.T) {
	for _, id := range []string{"a", "abc-123_X.y", "9f1c3e4a-1b2c-4d5e-8f90-123456789abc", "ünïcode", strings.Repeat("a", 128)} {
		require.NoError(t, validateID(id), id)
	}
	for _, id := range []string{"", " ", "a b", "a\tb", "a\u00a0b", "a\x00", "a\x7f", "\xc3\x28",
		"a*", "a?", "a[", "a]", "a{", "a}", "a:b", `a\b`, strings.Repeat("a", 129)} {
		require.ErrorIs(t, validateID(id), ErrInvalidID, "%q", id)
	}
}

func TestDecodeKeepsUnknownFields(t *testing.T) {
	j, err := decodeJob("x", map[string]string{
		"id": "x", "status": "queued", "service_required": "s", "trace_id": "abc", "progress": "50",
		"priority": "", "result": `[1,2]`,
	})
	require.NoError(t, err)
	require.Equal(t, map[string]string{"trace_id": "abc", "progress": "50"}, j.Extra)
	require.Equal(t, StatusQueued, j.Status)
	require.Equal(t, json.RawMessage(`[1,2]`), j.Result)
	require.Equal(t, DefaultMaxRetries, j.MaxRetries, "max_retries defaults to 3 when absent")
}

func TestDecodePairsRejectsNonStrings(t *testing.T) {
	_, err := decodePairs("x", []any{"status", int64(1)})
	require.ErrorIs(t, err, ErrCorruptRecord)
}

// TestLegacyScores checks that the scripts read the timestamps of legacy
// records as parseTime does: a requeued job's score is computed in Lua
// from its record.
func TestLegacyScores(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		cases := []struct {
			id, created, wfPriority, wfTime string
			priority                        int
		}{
			{"iso-ms", "2026-11-28T12:00:00.123Z", "", "", 5},
			{"offset", "2026-11-28T13:00:00.5+01:00", "", "", 1000},
			{"negative-offset", "2026-01-01T00:00:00.000-0800", "", "", 0},
			{"no-zone", "2026-11-28 12:00:00", "", "", 3},
			{"millis", "1795867200123", "", "", 7},
			{"leap-day", "2028-02-29T23:59:59.999Z", "", "", 9},
			{"workflow", "2026-11-28T12:00:00Z", "800", "1795860000000", 5},
		}
		for _, c := range cases {
			rec := map[string]any{"id": c.id, "status": "pending", "service_required": "s",
				"priority": c.priority, "created_at": c.created, "max_retries": "5"}
			if c.wfPriority != "" {
				rec["workflow_priority"], rec["workflow_datetime"] = c.wfPriority, c.wfTime
			}
			require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+c.id), rec).Err())
			require.NoError(t, b.rdb.ZAdd(ctx, b.key("jobs:pending"), redisZ(1, c.id)).Err())
		}
		for range cases {
			j, err := s.ClaimJob(ctx, "w")
			require.NoError(t, err)
			require.NoError(t, s.FailJob(ctx, j.ID, "w", "requeue"))
			at, pri := j.CreatedAt, j.Priority
			if !j.WorkflowDatetime.IsZero() {
				at, pri = j.WorkflowDatetime, j.WorkflowPriority
			}
			got, err := b.rdb.ZScore(ctx, b.key("jobs:pending"), j.ID).Result()
			require.NoError(t, err, j.ID)
			require.Equal(t, score(pri, at), got, j.ID)
			require.NoError(t, s.CancelJob(ctx, j.ID)) // out of the way of the next claim
		}
	})
}
