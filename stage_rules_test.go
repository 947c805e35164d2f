package jobstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// stageCheckScript is the stage check every write script runs first, on
// its own: STAGE <name> when it would end the write, else RUN.
var stageCheckScript = redis.NewScript(luaStages + luaStageCheck + `
return {'RUN', {}, {}, 0}
`)

// stageValues are values found in jobstore:stage, and junk: ASCII and
// other spaces, case, look-alikes of the names, NUL bytes, characters that
// Unicode case mapping turns into ASCII letters (U+0130 lowercases to i).
var stageValues = []string{
	"legacy", "dual-write", "dual-read", "step-primary", "step-only",
	" Dual-Write ", "\tSTEP-ONLY\n", "\vdual-read\f", "\r\nlegacy\r\n", "LeGaCy", "Step-Primary",
	"", " ", "\t", "bogus", "step_only", "dual write", "dual-writee", "-legacy", "legacy legacy",
	"dual-write\x00", "\x00dual-write", "\u00a0dual-read", "dual-read\u00a0", "\x85legacy", "legacy\xa0",
	"\u0085legacy", "\u2003step-only", "DUAL-WRİTE", "ＬＥＧＡＣＹ", "stage", "1", "nil",
}

// TestStageRulesAgree holds the stage check of the write scripts
// (luaStageCheck) and the Go readers of the published stage
// (sharedStage, Sync) together: for every stored value and every key type,
// a write is sent back to adopt a stage exactly when Go reads that
// published stage and the write's own differs; what the scripts ignore,
// Go reports as ErrCorruptRecord, and Sync ignores it too. PublishStage's
// script reads the current stage by the same rules.
func TestStageRulesAgree(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	values := append([]string(nil), stageValues...)
	pads := []string{" ", "\t", "\n", "\v", "\f", "\r", "\u00a0", "\x85", "\x00", "x", "\u3000"}
	for range 150 {
		var sb strings.Builder
		for range r.IntN(3) {
			sb.WriteString(pads[r.IntN(len(pads))])
		}
		for _, c := range stageNames[r.IntN(len(stageNames))] {
			if r.IntN(2) == 0 {
				c = []rune(strings.ToUpper(string(c)))[0]
			}
			sb.WriteRune(c)
		}
		for range r.IntN(3) {
			sb.WriteString(pads[r.IntN(len(pads))])
		}
		values = append(values, sb.String())
	}
	type plant struct {
		name string
		do   func(b *backend, key string) error
	}
	plants := []plant{
		{"none", func(*backend, string) error { return nil }},
		{"hash without the field", func(b *backend, k string) error { return b.rdb.HSet(ctx, k, "previous", "legacy").Err() }},
		{"string", func(b *backend, k string) error { return b.rdb.Set(ctx, k, "dual-write", 0).Err() }},
		{"list", func(b *backend, k string) error { return b.rdb.RPush(ctx, k, "dual-write").Err() }},
		{"set", func(b *backend, k string) error { return b.rdb.SAdd(ctx, k, "dual-write").Err() }},
		{"zset", func(b *backend, k string) error { return b.rdb.ZAdd(ctx, k, redisZ(1, "dual-write")).Err() }},
		{"stream", func(b *backend, k string) error {
			return b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: k, Values: []string{"stage", "dual-write"}}).Err()
		}},
	}
	for _, v := range values {
		plants = append(plants, plant{fmt.Sprintf("hash %q", v), func(b *backend, k string) error { return b.rdb.HSet(ctx, k, "stage", v).Err() }})
	}
	eachBackend(t, func(t *testing.T, b *backend) {
		key := b.key("jobstore:stage")
		for _, p := range plants {
			for _, own := range []Stage{StageLegacy, StageDualWrite, StageStepOnly} {
				require.NoError(t, b.rdb.Del(ctx, key).Err())
				require.NoError(t, p.do(b, key))
				s := newStore(t, b, WithStage(own))

				got, err := stageCheckScript.Run(ctx, b.rdb, []string{key}, "0", "0", own.String()).Slice()
				require.NoError(t, err, "%s: the stage check never raises", p.name)
				lua := got[0].(string)
				if lua == "STAGE" {
					lua += " " + got[4].(string)
				}

				st, ok, gerr := s.sharedStage(ctx)
				want := "RUN"
				if gerr == nil && ok && st != own {
					want = "STAGE " + st.String()
				}
				require.Equal(t, want, lua, "%s, own stage %s (Go: %v %v %v)", p.name, own, st, ok, gerr)
				if gerr != nil {
					require.ErrorIs(t, gerr, ErrCorruptRecord, p.name)
				}
				readable := gerr == nil && ok

				require.NoError(t, s.Sync(ctx), "%s: Sync ignores what the writes ignore", p.name)
				if readable {
					require.Equal(t, st, s.Stage(), p.name)
				} else {
					require.Equal(t, own, s.Stage(), "%s: the store keeps its stage", p.name)
				}

				// PublishStage reads the current stage by the same rules:
				// publishing the stage Go reads is no jump; over junk,
				// anything but a forced publish is a jump.
				m := &Migrator{s: s}
				switch {
				case readable:
					require.NoError(t, m.PublishStage(ctx, st, PublishOptions{}), p.name)
				case strings.HasPrefix(p.name, `hash "`): // a value no stage has
					require.ErrorIs(t, m.PublishStage(ctx, StageLegacy, PublishOptions{}), ErrStageJump, p.name)
				}
			}
		}
	})
}

// TestStageKeyOfWrongType: with a jobstore:stage key that is not a hash,
// every write of the lifecycle runs under the process's own stage; the
// operator's tools say what is wrong and change nothing; Sync and
// FollowStage go on. A jobstore:stats key of the wrong type fails
// FleetStats clearly, and the processes' flushes only log it.
func TestStageKeyOfWrongType(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		require.NoError(t, b.rdb.Set(ctx, b.key("jobstore:stage"), "step-only", 0).Err())
		h := &logSink{}
		s := newStore(t, b, WithDualWrite(true), WithLogger(slogLogger(h)))
		require.NoError(t, s.Sync(ctx))
		require.NoError(t, s.Sync(ctx))
		require.Equal(t, StageDualWrite, s.Stage())
		n := 0
		for _, l := range h.lines() {
			if strings.Contains(l, "published stage cannot be read") {
				n++
				require.Contains(t, l, "is a string, not a hash")
			}
		}
		require.Equal(t, 1, n, "logged once: %v", h.lines())

		caps := registerWorker(t, s, "w", "s")
		a, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		c, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		j, err := s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.NoError(t, s.StartJob(ctx, j.ID, "w"))
		require.NoError(t, s.ReportProgress(ctx, j.ID, "w", 50, ""))
		_, err = s.FailJob(ctx, j.ID, "w", "x", true)
		require.NoError(t, err)
		j, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.NoError(t, s.CompleteJob(ctx, j.ID, "w", nil))
		for _, id := range []string{a, c} {
			if id != j.ID {
				require.NoError(t, s.CancelJob(ctx, id, ""))
			}
		}
		_, err = s.RecoverExpired(ctx)
		require.NoError(t, err)
		require.Equal(t, StageDualWrite, s.Stage())
		requireMirrored(t, b)

		m := newMigrator(t, b, StageDualWrite)
		_, _, err = m.SharedStage(ctx)
		require.ErrorIs(t, err, ErrCorruptRecord)
		require.ErrorContains(t, err, "jobstore:stage is a string, not a hash")
		for _, force := range []bool{false, true} {
			err = m.PublishStage(ctx, StageDualWrite, PublishOptions{Force: force})
			require.ErrorIs(t, err, ErrCorruptRecord)
			require.ErrorContains(t, err, "is a string, not a hash; nothing was published")
			require.Equal(t, "step-only", b.rdb.Get(ctx, b.key("jobstore:stage")).Val(), "never overwritten")
		}

		fctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		require.ErrorIs(t, s.FollowStage(fctx, 10*time.Millisecond), context.DeadlineExceeded)
		cancel()
		require.Equal(t, StageDualWrite, s.Stage())

		require.NoError(t, b.rdb.Set(ctx, b.key("jobstore:stats"), "junk", 0).Err())
		_, _, err = m.FleetStats(ctx)
		require.ErrorIs(t, err, ErrCorruptRecord)
		require.ErrorContains(t, err, "jobstore:stats is a string, not a hash")
		s.flushStats(ctx)
		s.flushStats(ctx)
		n = 0
		for _, l := range h.lines() {
			if strings.Contains(l, "flush fleet stats") {
				n++
			}
		}
		require.LessOrEqual(t, n, 1, "a stats key of the wrong type is logged once")
	})
}
