package jobstore

// Regression tests of the follower (follow.go), next to the reviewer's in
// review_migrate_test.go.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// follow runs m.Follow until the test ends. Unlike runFollower, its
// result can be awaited (returned) and still be had from stop.
func follow(t *testing.T, m *Migrator, opts FollowOptions) (returned func(d time.Duration) (error, bool), stop func() error) {
	t.Helper()
	fctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var err error
	go func() { err = m.Follow(fctx, opts); close(done) }()
	returned = func(d time.Duration) (error, bool) {
		select {
		case <-done:
			return err, true
		case <-time.After(d):
			return nil, false
		}
	}
	stop = func() error {
		cancel()
		if e, ok := returned(10 * time.Second); ok {
			return e
		}
		return errors.New("the follower did not stop within 10s")
	}
	t.Cleanup(func() { _ = stop() })
	return returned, stop
}

// TestFollowerStopsWhenItsOwnMigratorLeavesItsStages: a Migrator that both
// follows and publishes moves its own Store at once (PublishStage); the
// follower stops on that, even with no sync or sweep to notice, and never
// syncs under step-primary.
func TestFollowerStopsWhenItsOwnMigratorLeavesItsStages(t *testing.T) {
	b := followerBackend(t)
	m := newMigrator(t, b, StageLegacy)
	require.NoError(t, m.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	returned, _ := follow(t, m, FollowOptions{Configure: true, Sweep: -1})
	time.Sleep(300 * time.Millisecond)

	require.NoError(t, m.PublishStage(ctx, StageDualRead, PublishOptions{}))
	if err, ok := returned(300 * time.Millisecond); ok {
		t.Fatalf("Follow stopped in dual-read: %v", err)
	}
	id := "own-migrator"
	legacyRecord(t, b, id)
	followerSynced(t, b, id)

	require.NoError(t, m.PublishStage(ctx, StageStepPrimary, PublishOptions{}))
	authoritative := b.rdb.HGetAll(ctx, b.key("step:"+id)).Val()
	require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+id), "payload", `{"stale":true}`).Err())
	err, ok := returned(3 * time.Second)
	require.True(t, ok, "Follow still runs after its own Migrator published step-primary")
	require.ErrorIs(t, err, ErrNamespaceInUse)
	require.Equal(t, authoritative, b.rdb.HGetAll(ctx, b.key("step:"+id)).Val(), "a sync ran in step-primary")
}

// TestFollowerSyncsANewWriteAtTheDebounceDuringARecheckWait: a write to a
// job already synced and waiting for its recheck is synced after the
// debounce, not at the recheck (mark only ever moved a due time later).
func TestFollowerSyncsANewWriteAtTheDebounceDuringARecheckWait(t *testing.T) {
	b := followerBackend(t)
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	_, stop := runFollower(t, newMigrator(t, b, StageDualWrite), FollowOptions{Configure: true, Sweep: -1,
		Recheck: 5 * time.Second})
	time.Sleep(300 * time.Millisecond)

	id := "recheck-wait"
	rec := legacyRecord(t, b, id)
	followerSynced(t, b, id) // synced; its recheck is due in 5 s
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, b.rdb.HSet(ctx, rec, "status", "assigned", "worker_id", "lw").Err())
	start := time.Now()
	ok := assertEventually(func() bool { return b.rdb.HGet(ctx, b.key("step:"+id), "status").Val() == "assigned" }, 4*time.Second)
	took := time.Since(start)
	require.ErrorIs(t, stop(), context.Canceled)
	require.True(t, ok && took < time.Second, "the second write reached step:%s after %v (mirrored: %v)", id, took, ok)
}

// TestFollowerAddsNotificationClassesOnly: Configure adds the classes the
// follower needs (every type a job's sub-keys may have) to what the
// server's other users set, and removes none.
func TestFollowerAddsNotificationClassesOnly(t *testing.T) {
	b := followerBackend(t)
	require.NoError(t, b.rdb.ConfigSet(ctx, "notify-keyspace-events", "Ex").Err())
	m := newMigrator(t, b, StageLegacy)
	require.NoError(t, m.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	_, stop := runFollower(t, m, FollowOptions{Configure: true, Sweep: -1})
	require.Eventually(t, func() bool {
		return len(b.rdb.ConfigGet(ctx, "notify-keyspace-events").Val()["notify-keyspace-events"]) > 2
	}, 3*time.Second, 20*time.Millisecond)
	require.ErrorIs(t, stop(), context.Canceled)
	flags := b.rdb.ConfigGet(ctx, "notify-keyspace-events").Val()["notify-keyspace-events"]
	for _, c := range "EKx" {
		require.Contains(t, flags, string(c), "kept or added: %q", flags)
	}
	if !strings.ContainsRune(flags, 'A') {
		for _, c := range "g$lshzte" {
			require.Contains(t, flags, string(c), "added: %q", flags)
		}
	}
}

// TestFollowerMirrorsARecordTTLRenewal: a record's renewed TTL (a
// non-mirroring jobstore process with WithRecordRetention) reaches the
// step record; the sync compared only whether both sides had a TTL.
func TestFollowerMirrorsARecordTTLRenewal(t *testing.T) {
	b := followerBackend(t)
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	_, stop := runFollower(t, newMigrator(t, b, StageDualWrite), FollowOptions{Configure: true, Sweep: -1,
		Recheck: 200 * time.Millisecond})
	time.Sleep(300 * time.Millisecond)

	id := "record-ttl"
	rec := legacyRecord(t, b, id)
	require.NoError(t, b.rdb.Expire(ctx, rec, 2*time.Second).Err())
	require.Eventually(t, func() bool { return b.rdb.PTTL(ctx, b.key("step:"+id)).Val() > 0 },
		3*time.Second, 20*time.Millisecond, "the record and its TTL are mirrored")
	require.NoError(t, b.rdb.Expire(ctx, rec, time.Hour).Err()) // the renewal
	require.Eventually(t, func() bool { return b.rdb.PTTL(ctx, b.key("step:"+id)).Val() > 50*time.Minute },
		3*time.Second, 20*time.Millisecond, "the renewal is mirrored")
	// And back to no TTL at all.
	require.NoError(t, b.rdb.Persist(ctx, rec).Err())
	require.Eventually(t, func() bool { return b.rdb.PTTL(ctx, b.key("step:"+id)).Val() == -1 },
		3*time.Second, 20*time.Millisecond, "PERSIST is mirrored")
	require.ErrorIs(t, stop(), context.Canceled)
}

// TestFollowerSweepEmptiesAnActiveHashTheJobSideLost: an entry removed
// from jobs:active:<w> while no follower listened, after the records
// stopped naming <w>, goes from steps:active:<w> at the next sweep (sweeps
// walked only the job side's active hashes, where <w> is gone).
func TestFollowerSweepEmptiesAnActiveHashTheJobSideLost(t *testing.T) {
	b := followerBackend(t)
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	id := "lost-entry"
	legacyRecord(t, b, id)
	requireCopy(t, b, "job:"+id, "step:"+id)
	require.NoError(t, b.rdb.HSet(ctx, b.key("steps:active:gone"), id, `{"id":"lost-entry"}`).Err())

	_, stop := runFollower(t, newMigrator(t, b, StageDualWrite), FollowOptions{Configure: true, Sweep: -1})
	require.Eventually(t, func() bool { return b.rdb.Exists(ctx, b.key("steps:active:gone")).Val() == 0 },
		3*time.Second, 20*time.Millisecond, "the start sweep syncs steps:active:gone")
	require.ErrorIs(t, stop(), context.Canceled)
}

// TestFollowerPassesOverWrongTypeKeys: a jobs:active:<w> that is not a
// hash, or a result hash of the wrong type on either side, is passed over
// (counted and logged once); the rest of each job naming it is synced. The
// sync script used to fail on it, and the job was retried every Recheck,
// for ever, logging each time.
func TestFollowerPassesOverWrongTypeKeys(t *testing.T) {
	b := followerBackend(t)
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	require.NoError(t, b.rdb.Set(ctx, b.key("jobs:active:junk"), "not a hash", 0).Err())
	require.NoError(t, b.rdb.Set(ctx, b.key("steps:failed"), "not a hash either", 0).Err())
	sink := &logSink{level: slog.LevelWarn}
	m, err := NewMigrator(b.rdb, WithKeyPrefix(b.prefix), WithClock(b.clock.Now), WithStage(StageDualWrite), WithLogger(slogLogger(sink)))
	require.NoError(t, err)
	var mu sync.Mutex
	var last FollowStats
	_, stop := runFollower(t, m, FollowOptions{Configure: true, Sweep: -1, Recheck: 100 * time.Millisecond,
		Report: func(st FollowStats) { mu.Lock(); last = st; mu.Unlock() }})
	time.Sleep(300 * time.Millisecond)

	for _, id := range []string{"names-junk-1", "names-junk-2"} {
		rec := legacyRecord(t, b, id)
		require.NoError(t, b.rdb.HSet(ctx, rec, "status", "assigned", "worker_id", "junk").Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("jobs:failed"), id, `{"error":"x"}`).Err())
		require.NoError(t, b.rdb.ZAdd(ctx, b.key("jobs:pending"), redisZ(1, id)).Err())
		followerSynced(t, b, id)
		require.Eventually(t, func() bool { return b.rdb.ZScore(ctx, b.key("steps:pending"), id).Err() == nil },
			3*time.Second, 20*time.Millisecond, "the rest of %s is synced", id)
	}
	time.Sleep(1200 * time.Millisecond) // rechecks, and a report
	require.ErrorIs(t, stop(), context.Canceled)
	mu.Lock()
	defer mu.Unlock()
	require.Zero(t, last.Backlog, "nothing is retried for ever: %+v", last)
	require.EqualValues(t, 2, last.WrongType, "two keys passed over: %+v", last)
	var warned int
	for _, l := range sink.lines() {
		if strings.Contains(l, "junk") || strings.Contains(l, "steps:failed") {
			warned++
		}
	}
	require.Equal(t, 2, warned, "each key is logged once: %q", sink.lines())
}

// followerStats runs a follower on m whose reports land in the returned
// function.
func followerStats(t *testing.T, m *Migrator, opts FollowOptions) (returned <-chan error, stop func() error, last func() FollowStats) {
	t.Helper()
	var mu sync.Mutex
	var st FollowStats
	opts.Report = func(s FollowStats) { mu.Lock(); st = s; mu.Unlock() }
	returned, stop = runFollower(t, m, opts)
	return returned, stop, func() FollowStats { mu.Lock(); defer mu.Unlock(); return st }
}

// TestFollowerCountsOneRestartPerReconnection: a lost subscription
// connection is one restart and one sweep (each of the two patterns'
// confirmations counted as one: two per reconnection).
func TestFollowerCountsOneRestartPerReconnection(t *testing.T) {
	b := followerBackend(t)
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	_, stop, last := followerStats(t, newMigrator(t, b, StageDualWrite), FollowOptions{Configure: true, Sweep: -1})
	require.Eventually(t, func() bool { return last().Sweeps == 1 }, 3*time.Second, 20*time.Millisecond)

	require.NoError(t, b.rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err())
	require.Eventually(t, func() bool { return last().Sweeps >= 2 }, 10*time.Second, 20*time.Millisecond, "a sweep after the reconnection")
	time.Sleep(1500 * time.Millisecond) // any extra sweep, and a report
	require.ErrorIs(t, stop(), context.Canceled)
	require.EqualValues(t, 1, last().Restarts, "%+v", last())
	require.EqualValues(t, 2, last().Sweeps, "%+v", last())
}

// TestFollowerFailsWhenNotificationsGoOffAndItMayNotSetThem: without
// Configure, a follower that finds the notifications off after a server
// restart stops with ErrInvalidConfig instead of running deaf.
func TestFollowerFailsWhenNotificationsGoOffAndItMayNotSetThem(t *testing.T) {
	srv := startTestServer(t)
	b := srv.Backend(&redis.Options{DB: 3})
	b.prefix = "f:"
	require.NoError(t, b.rdb.ConfigSet(ctx, "notify-keyspace-events", "KA").Err())
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	returned, _ := follow(t, newMigrator(t, b, StageDualWrite), FollowOptions{Sweep: -1})
	time.Sleep(300 * time.Millisecond)

	srv.Restart() // the notifications are off again
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{Force: true}))
	err, ok := returned(10 * time.Second)
	require.True(t, ok, "Follow runs on, deaf, with the notifications off")
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, "CONFIG SET notify-keyspace-events")
}

// TestFollowerTurnsNotificationsBackOn: another user of the server that
// replaces notify-keyspace-events does not leave a Configure follower
// deaf: it sets its classes again and sweeps for what it missed.
func TestFollowerTurnsNotificationsBackOn(t *testing.T) {
	b := followerBackend(t)
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	_, stop := runFollower(t, newMigrator(t, b, StageDualWrite), FollowOptions{Configure: true, Sweep: -1})
	time.Sleep(300 * time.Millisecond)

	require.NoError(t, b.rdb.ConfigSet(ctx, "notify-keyspace-events", "Ex").Err())
	legacyRecord(t, b, "unheard") // written while the follower is deaf
	followerSynced(t, b, "unheard")
	legacyRecord(t, b, "heard")
	followerSynced(t, b, "heard")
	require.ErrorIs(t, stop(), context.Canceled)
	require.Contains(t, b.rdb.ConfigGet(ctx, "notify-keyspace-events").Val()["notify-keyspace-events"], "E", "the other user's classes stay")
}

// TestFollowerCatchesUpAfterFallingBehind: notifications the follower
// cannot take in time are never dropped in silence. It reads its
// subscription itself (go-redis's Channel drops a message when its buffer
// stays full); one that falls too far behind overflows its pub/sub output
// buffer, Redis closes its connection, and the reconnection's sweep
// mirrors what it missed. Here the buffer limit is tiny, and a burst of
// legacy writes overflows it.
func TestFollowerCatchesUpAfterFallingBehind(t *testing.T) {
	b := followerBackend(t)
	require.NoError(t, b.rdb.ConfigSet(ctx, "client-output-buffer-limit", "pubsub 1024 0 0").Err())
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	_, stop, last := followerStats(t, newMigrator(t, b, StageDualWrite), FollowOptions{Configure: true, Sweep: -1})
	require.Eventually(t, func() bool { return last().Sweeps == 1 }, 3*time.Second, 20*time.Millisecond)

	const n = 3000
	pipe := b.rdb.Pipeline()
	for i := range n {
		id := fmt.Sprint("burst-", i)
		pipe.HSet(ctx, b.key("job:"+id), "id", id, "status", "pending")
	}
	_, err := pipe.Exec(ctx)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return len(scanKeys(t, b.rdb, b.key("step:burst-*"))) == n
	}, 15*time.Second, 100*time.Millisecond, "every write of the burst is mirrored")
	require.Eventually(t, func() bool { return last().Restarts >= 1 }, 3*time.Second, 50*time.Millisecond,
		"the overflow was a reconnection: %+v", last())
	require.ErrorIs(t, stop(), context.Canceled)
}

// TestFollowerKeepsSweepCatchUpsOutOfTheLag: what a sweep finds behind was
// written at an unknown time; it is counted apart (SweepChanged) and not
// as a sync with a lag of about 0, which made p50 and p99 look better than
// the notifications' real lag.
func TestFollowerKeepsSweepCatchUpsOutOfTheLag(t *testing.T) {
	b := followerBackend(t)
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	for i := range 20 {
		legacyRecord(t, b, fmt.Sprint("before-", i)) // before the follower: only a sweep finds them
	}
	_, stop, last := followerStats(t, newMigrator(t, b, StageDualWrite), FollowOptions{Configure: true, Sweep: -1})
	require.Eventually(t, func() bool { return last().Sweeps == 1 }, 3*time.Second, 20*time.Millisecond)
	time.Sleep(1100 * time.Millisecond) // a report after the sweep
	st := last()
	require.EqualValues(t, 20, st.Changed, "%+v", st)
	require.EqualValues(t, 20, st.SweepChanged, "%+v", st)
	require.Zero(t, st.LagP99, "no notification was synced: %+v", st)

	legacyRecord(t, b, "heard")
	followerSynced(t, b, "heard")
	time.Sleep(1100 * time.Millisecond)
	require.ErrorIs(t, stop(), context.Canceled)
	st = last()
	require.EqualValues(t, 21, st.Changed, "%+v", st)
	require.EqualValues(t, 20, st.SweepChanged, "%+v", st)
	require.GreaterOrEqual(t, st.LagP50, 20*time.Millisecond, "the one notification's lag, Debounce included: %+v", st)
}

// TestFollowerResubscribesWhenItsConnectionGoesSilent: a subscription
// whose connection stops answering without being closed (a peer gone
// without a word, as in a failover that leaves no RST; here a proxy that
// swallows every byte) is replaced once a PING goes unanswered, and the
// new subscription's sweep mirrors what was written meanwhile. Before,
// the follower waited on the dead connection (go-redis reconnects only
// when a write fails), and the notifications swallowed were lost for good.
func TestFollowerResubscribesWhenItsConnectionGoesSilent(t *testing.T) {
	srv := startTestServer(t)
	b := srv.Backend(&redis.Options{DB: 3})
	b.prefix = "f:"
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	proxy := startFaultProxy(t, srv.Addr())
	frdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DB: 3})
	t.Cleanup(func() { _ = frdb.Close() })
	fm, err := NewMigrator(frdb, WithKeyPrefix(b.prefix), WithClock(b.clock.Now), WithStage(StageDualWrite))
	require.NoError(t, err)
	_, stop, last := followerStats(t, fm, FollowOptions{Configure: true, Sweep: -1})
	require.Eventually(t, func() bool { return last().Sweeps == 1 }, 3*time.Second, 20*time.Millisecond)

	proxy.SetBlackhole(true)
	legacyRecord(t, b, "unheard") // its notification is swallowed
	time.Sleep(8 * time.Second)   // a quiet read, a PING, no answer, and a new subscription that cannot confirm
	proxy.Heal()
	followerSynced(t, b, "unheard")
	require.Eventually(t, func() bool { return last().Restarts >= 1 }, 3*time.Second, 20*time.Millisecond, "%+v", last())
	legacyRecord(t, b, "heard")
	followerSynced(t, b, "heard")
	require.ErrorIs(t, stop(), context.Canceled)
}

// TestFollowerSyncScriptsRefuseOtherStages: the scripts themselves refuse
// a sync built for a stage the follower must not run in, whatever the Go
// side checked, and write nothing.
func TestFollowerSyncScriptsRefuseOtherStages(t *testing.T) {
	b := followerBackend(t)
	id := "refused"
	legacyRecord(t, b, id)
	require.NoError(t, b.rdb.HSet(ctx, b.key("jobs:active:w"), id, "{}").Err())
	for _, st := range []Stage{StageLegacy, StageStepPrimary, StageStepOnly} {
		res, err := syncJobScript.Run(ctx, b.rdb, []string{b.key("job:" + id), b.key("jobs:pending"), b.key("jobs:completed"),
			b.key("jobs:failed"), b.key("step:" + id), b.key("steps:pending"), b.key("steps:completed"), b.key("steps:failed"),
			b.key("jobstore:stage")}, "0", "0", st.String(), id, b.key("jobs:active:"), b.key("steps:active:"), "progress").Slice()
		require.NoError(t, err)
		require.Equal(t, "REFUSED", res[0], st)
		res, err = syncActiveScript.Run(ctx, b.rdb, []string{b.key("jobs:active:w"), b.key("steps:active:w"), b.key("jobstore:stage")},
			"0", "0", st.String()).Slice()
		require.NoError(t, err)
		require.Equal(t, "REFUSED", res[0], st)
	}
	requireNoKeys(t, b, "step*")
}
