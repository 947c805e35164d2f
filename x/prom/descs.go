package prom

import "github.com/prometheus/client_golang/prometheus"

// Every metric the Collector exports but jobstore_operation_duration_seconds
// (a HistogramVec, see NewCollector). README.md lists them.

func desc(name, help string, labels ...string) *prometheus.Desc {
	d := prometheus.NewDesc(name, help, labels, nil)
	allDescs = append(allDescs, d)
	return d
}

var allDescs []*prometheus.Desc

// The Store's counters and stage.
var (
	descDualWriteAttempted = desc("jobstore_dual_write_attempted_total",
		"Write operations that mirrored something to the other namespace.")
	descDualWriteFailed = desc("jobstore_dual_write_failed_total",
		"Write operations whose mirror failed in whole or part (panics included), by operation; the primary write succeeded in each.", "op")
	descDualWritePanics = desc("jobstore_dual_write_panics_total",
		"Mirror code panics that were recovered (also counted in jobstore_dual_write_failed_total).")
	descReads = desc("jobstore_read_records_total",
		"Records looked up by plain reads (GetJob, GetPendingJobs).")
	descReadFallbacks = desc("jobstore_read_fallbacks_total",
		"Plain reads in dual-read answered from job:* because step:* did not have them.")
	descShadowChecks = desc("jobstore_read_shadow_checks_total",
		"Records read that were compared with their copy in the other namespace (WithShadowReads).")
	descShadowMismatches = desc("jobstore_read_shadow_mismatches_total",
		"Shadow checks whose copy differed.")
	descStage = desc("jobstore_stage",
		"The Store's migration stage: 1 for the current stage, 0 for the others.", "stage")
)

// Queue sizes (WithQueueSizes).
var (
	descQueueJobs = desc("jobstore_queue_jobs",
		"Jobs in a queue of a namespace: pending, active (held by workers), completed, failed.", "namespace", "queue")
	descQueueWorkers = desc("jobstore_queue_workers",
		"Workers holding jobs (active hashes) in a namespace.", "namespace")
)

// The fleet and the published stage (WithMigrator).
var (
	descFleetStage = desc("jobstore_fleet_process_stage",
		"The stage each process running FollowStage last checked in with: 1 for its stage, 0 for the others.", "process", "stage")
	descFleetCheckIn = desc("jobstore_fleet_process_checkin_timestamp_seconds",
		"When each process last checked in, in Unix seconds.", "process")
	descFleetUnreadable = desc("jobstore_fleet_unreadable_checkins",
		"Check-ins in Redis that could not be read.")
	descPublishedStage = desc("jobstore_published_stage",
		"The stage published for every process: 1 for it, 0 for the others (all 0 when none is published).", "stage")
)

// Followers (WithMigrator, FollowerObserver).
var (
	descFollowerEvents = desc("jobstore_follower_events_total",
		"Keyspace notifications a follower received.", "follower")
	descFollowerSynced = desc("jobstore_follower_synced_total",
		"Job syncs a follower ran.", "follower")
	descFollowerChanged = desc("jobstore_follower_changed_total",
		"Syncs that found the step side behind: legacy writes the follower mirrored.", "follower")
	descFollowerSweepChanged = desc("jobstore_follower_sweep_changed_total",
		"Legacy writes a follower's sweeps caught (missed notifications); part of jobstore_follower_changed_total and kept out of the lag.", "follower")
	descFollowerWrongType = desc("jobstore_follower_wrong_type_total",
		"Keys of the wrong type a follower passed over.", "follower")
	descFollowerSweeps = desc("jobstore_follower_sweeps_total",
		"Full re-checks of the job namespace a follower finished.", "follower")
	descFollowerRestarts = desc("jobstore_follower_restarts_total",
		"A follower's (re)subscriptions, each followed by a sweep.", "follower")
	descFollowerBacklog = desc("jobstore_follower_backlog_jobs",
		"Jobs waiting to be synced by a follower.", "follower")
	descFollowerLagP50 = desc("jobstore_follower_lag_p50_seconds",
		"Median time from a job's first notification to the end of its sync, over a follower's last 4096 syncs that changed something.", "follower")
	descFollowerLagP99 = desc("jobstore_follower_lag_p99_seconds",
		"99th percentile of the same lag.", "follower")
	descFollowerLastLegacy = desc("jobstore_follower_last_legacy_write_timestamp_seconds",
		"When a follower last mirrored a legacy write, in Unix seconds (absent when never).", "follower")
	descFollowerReport = desc("jobstore_follower_last_report_timestamp_seconds",
		"When a follower last reported, in Unix seconds.", "follower")
	descLegacyLastWrite = desc("jobstore_legacy_last_write_timestamp_seconds",
		"The latest legacy write any follower ever mirrored, in Unix seconds: what PublishStage's legacy gate reads (absent when never).")
)

// A backfill's progress (BackfillObserver).
var (
	descBackfillPhase = desc("jobstore_backfill_phase",
		"The backfill's phase: 1 for the current one, 0 for the phases before it.", "phase")
	descBackfillDone = desc("jobstore_backfill_done_items",
		"Work done in a backfill phase, as last reported.", "phase")
	descBackfillExpected = desc("jobstore_backfill_expected_items",
		"Work expected in a backfill phase, as last reported (absent when unknown).", "phase")
	descBackfillLast = desc("jobstore_backfill_last_progress_timestamp_seconds",
		"When the backfill last reported progress, in Unix seconds.")
)

// The Collector's own sources.
var (
	descCollectorUp = desc("jobstore_collector_up",
		"Whether the last Redis read of a source succeeded (1) or failed (0); its metrics are left out while 0.", "source")
	descCollectorErrors = desc("jobstore_collector_errors_total",
		"Failed Redis reads of a source.", "source")
)
