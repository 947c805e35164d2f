package prom

import (
	"context"
	"sync"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/prometheus/client_golang/prometheus"
)

// The migration's side: the fleet and the published stage, followers, and
// a backfill's progress.

type fleetView struct {
	procs      []jobstore.Process
	unreadable int
	published  jobstore.Stage
	isSet      bool // a stage is published
}

func readFleet(ctx context.Context, m *jobstore.Migrator) (fleetView, error) {
	var v fleetView
	var err error
	if v.procs, v.unreadable, err = m.Fleet(ctx); err != nil {
		return v, err
	}
	v.published, v.isSet, err = m.SharedStage(ctx)
	return v, err
}

func collectFleet(ch chan<- prometheus.Metric, v fleetView) {
	for _, p := range v.procs {
		stateSet(ch, descFleetStage, p.Stage, p.ID)
		timestamp(ch, descFleetCheckIn, p.CheckedAt, p.ID)
	}
	gauge(ch, descFleetUnreadable, float64(v.unreadable))
	published := jobstore.Stage(-1) // none: every series 0
	if v.isSet {
		published = v.published
	}
	stateSet(ch, descPublishedStage, published)
}

// FollowerReportMaxAge is how old a follower's last report may be for the
// Collector to export it. A follower reports every second while it runs;
// the reports of followers that stopped stay in Redis, and are left out
// once this old, so that each run of a follower does not leave series
// behind for good.
const FollowerReportMaxAge = 5 * time.Minute

type followerView struct {
	reports    map[string]jobstore.FollowReport
	lastLegacy time.Time
}

func readFollowers(ctx context.Context, m *jobstore.Migrator) (followerView, error) {
	reports, last, err := m.FollowerReports(ctx)
	if err != nil {
		return followerView{}, err
	}
	for id, r := range reports {
		if time.Since(r.CheckedAt) > FollowerReportMaxAge {
			delete(reports, id)
		}
	}
	return followerView{reports: reports, lastLegacy: last}, nil
}

func collectFollowers(ch chan<- prometheus.Metric, v followerView) {
	for id, r := range v.reports {
		collectFollowStats(ch, id, r.Stats, r.CheckedAt)
	}
	timestamp(ch, descLegacyLastWrite, v.lastLegacy)
}

// LocalFollower is the follower label of the follower that reports through
// FollowerObserver.
const LocalFollower = "local"

type followObs struct {
	st jobstore.FollowStats
	at time.Time
}

// FollowerObserver returns the function to set as FollowOptions.Report:
// the follower this process runs is then exported with the follower label
// "local" (LocalFollower), as of its last report. A Collector given
// WithMigrator exports the same follower under its id too; use one or the
// other for a follower, not both.
func (c *Collector) FollowerObserver() func(jobstore.FollowStats) {
	return func(st jobstore.FollowStats) {
		c.follow.Store(&followObs{st: st, at: time.Now()})
	}
}

func (c *Collector) collectFollower(ch chan<- prometheus.Metric) {
	if o := c.follow.Load(); o != nil {
		collectFollowStats(ch, LocalFollower, o.st, o.at)
	}
}

func collectFollowStats(ch chan<- prometheus.Metric, id string, st jobstore.FollowStats, at time.Time) {
	counter(ch, descFollowerEvents, st.Events, id)
	counter(ch, descFollowerSynced, st.Synced, id)
	counter(ch, descFollowerChanged, st.Changed, id)
	counter(ch, descFollowerSweepChanged, st.SweepChanged, id)
	counter(ch, descFollowerWrongType, st.WrongType, id)
	counter(ch, descFollowerSweeps, st.Sweeps, id)
	counter(ch, descFollowerRestarts, st.Restarts, id)
	gauge(ch, descFollowerBacklog, float64(st.Backlog), id)
	gauge(ch, descFollowerLagP50, st.LagP50.Seconds(), id)
	gauge(ch, descFollowerLagP99, st.LagP99.Seconds(), id)
	timestamp(ch, descFollowerLastLegacy, st.LastLegacyWrite, id)
	timestamp(ch, descFollowerReport, at, id)
}

// backfillState is a backfill's progress as BackfillObserver last heard
// it.
type backfillState struct {
	mu      sync.Mutex
	phases  map[string]phaseProgress // every phase heard of, with its last progress
	current string
	at      time.Time
}

type phaseProgress struct{ done, total int64 }

// BackfillObserver returns a function to call with a backfill's progress:
// its phase (any name; each phase keeps its own series), how much of the
// phase is done, and its total (negative when unknown). Adapt the
// backfill's own progress callback to it, passing the fields in which it
// reports its phase, the work done and the work expected:
//
//	obs := c.BackfillObserver()
//	opts.Progress = func(p jobstore.BackfillProgress) { obs(p.Phase, done, total) }
//
// It is safe for concurrent use; one backfill at a time is exported.
func (c *Collector) BackfillObserver() func(phase string, done, total int64) {
	return func(phase string, done, total int64) {
		b := &c.backfill
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.phases == nil {
			b.phases = map[string]phaseProgress{}
		}
		b.phases[phase] = phaseProgress{done, total}
		b.current, b.at = phase, time.Now()
	}
}

func (b *backfillState) collect(ch chan<- prometheus.Metric) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.phases == nil {
		return
	}
	for phase, p := range b.phases {
		v := 0.0
		if phase == b.current {
			v = 1
		}
		gauge(ch, descBackfillPhase, v, phase)
		gauge(ch, descBackfillDone, float64(p.done), phase)
		if p.total >= 0 {
			gauge(ch, descBackfillExpected, float64(p.total), phase)
		}
	}
	timestamp(ch, descBackfillLast, b.at)
}
