package jobstore

import "strings"

// Every Redis key and channel name jobstore reads or writes is built in
// this file, by small pure functions. The job namespace is exactly the
// layout of the legacy TypeScript services; the step namespace is the same
// layout under step: and steps:.
//
//	job:<id>                 hash    the record, string fields
//	job:<id>:<suffix>        any     a sub-key of the job, such as job:<id>:progress
//	jobs:pending             zset    ids waiting, claimed highest score first
//	jobs:active:<worker>     hash    id → job JSON, the jobs a worker holds
//	jobs:completed           hash    id → result JSON; the whole key expires (24 h)
//	jobs:failed              hash    id → error JSON; the whole key expires (7 days)
//
// Outside both namespaces, shared by every stage and never migrated:
//
//	worker:<id>              hash    a worker's registration and status
//	worker:<id>:heartbeat    string  alive while it exists (60 s TTL)
//	workers:active           set     registered worker ids
//	progress:<id>            stream  a job's progress events
//
// Scripts take their keys in KEYS, except the claim, which must build the
// record keys of the candidates it reads: it gets the record prefix
// (keyspace.recordPrefix) in ARGV and appends the id, the same rule as
// keyspace.record.

// Namespace is one of the two key layouts: the legacy job:<id> / jobs:*
// and the new step:<id> / steps:*.
type Namespace int

// The two namespaces.
const (
	JobNamespace  Namespace = iota // job:<id>, jobs:*
	StepNamespace                  // step:<id>, steps:*
)

// String returns "job" or "step".
func (n Namespace) String() string {
	if n == StepNamespace {
		return "step"
	}
	return "job"
}

func (n Namespace) valid() bool { return n == JobNamespace || n == StepNamespace }

// other returns the namespace that is not n.
func (n Namespace) other() Namespace {
	if n == JobNamespace {
		return StepNamespace
	}
	return JobNamespace
}

// recordWord is the record prefix without its colon, queueWord the queue
// prefix: "job" and "jobs", or "step" and "steps".
func (n Namespace) recordWord() string { return n.String() }
func (n Namespace) queueWord() string  { return n.String() + "s" }

// Fields and values that jobstore keeps for itself. Legacy code reads
// neither: it reads the fields it knows by name, and copies the rest
// without looking at them.
const (
	// fOpToken is the record field holding the token of the last
	// jobstore call that changed the record. A call whose reply was lost
	// and that go-redis sends again finds its own token and answers as
	// the first run did, instead of acting twice.
	fOpToken = "jobstore_op"
	// fWorkerJobstore marks a worker:<id> hash registered by a jobstore
	// process; its value is the library's version. A worker hash without
	// it belongs to a legacy worker.
	fWorkerJobstore = "jobstore"
	// fWorkerBeat is the value of the last heartbeat a jobstore process
	// wrote for the worker. The worker is jobstore's while its heartbeat
	// key still holds that value: a legacy worker that takes over the id
	// (its registration only adds fields, keeping the jobstore mark)
	// writes its own.
	fWorkerBeat = "jobstore_heartbeat"
)

// jobstoreWorker tells whether a worker is a jobstore process, from its
// hash's mark and beat and its heartbeat key's value.
func jobstoreWorker(mark, beat, heartbeat string) bool {
	return mark != "" && beat != "" && beat == heartbeat
}

// The channels the legacy services publish on, and jobstore with them.
const (
	chJobSubmitted      = "job_submitted"
	chWorkflowSubmitted = "workflow_submitted"
	chJobClaimed        = "job_claimed"
	chProgress          = "update_job_progress"
	chCompleteJob       = "complete_job"
	chJobFailed         = "job_failed"
	chCancelJob         = "cancel_job"
	chJobCancelled      = "job_cancelled"
	chWorkerStatus      = "worker_status"
)

// keyspace is a namespace under an optional key prefix (WithKeyPrefix). It
// is the only type that turns ids, workers and queues into key names.
type keyspace struct {
	prefix string
	ns     Namespace
}

// recordPrefix is "job:" or "step:" under the prefix; a record key is it
// followed by the id.
func (k keyspace) recordPrefix() string { return k.prefix + k.ns.recordWord() + ":" }

// record returns the key of the record with the given id: "job:42".
func (k keyspace) record(id string) string { return k.recordPrefix() + id }

// sub returns the key of a sub-key of a job: "job:42:progress".
func (k keyspace) sub(id, suffix string) string { return k.record(id) + subSuffix(suffix) }

// subSuffix is what follows a record key in the key of one of its
// sub-keys (":progress"): scripts that hold a record key build its
// sub-keys by appending it, the rule of keyspace.sub.
func subSuffix(suffix string) string { return ":" + suffix }

// progressSuffix names the hash where workers report a job's progress.
const progressSuffix = "progress"

// progress is the hash where workers report a job's progress.
func (k keyspace) progress(id string) string { return k.sub(id, progressSuffix) }

// queuePrefix is "jobs:" or "steps:" under the prefix.
func (k keyspace) queuePrefix() string { return k.prefix + k.ns.queueWord() + ":" }

// pending is the sorted set of ids waiting for a worker: "jobs:pending".
func (k keyspace) pending() string { return k.queuePrefix() + "pending" }

// activePrefix is "jobs:active:"; a worker's active hash is it followed
// by the worker id.
func (k keyspace) activePrefix() string { return k.queuePrefix() + "active:" }

// active returns the hash of the jobs a worker holds: "jobs:active:w1".
func (k keyspace) active(worker string) string { return k.activePrefix() + worker }

// activePattern is the SCAN pattern of every worker's active hash.
func (k keyspace) activePattern() string { return k.activePrefix() + "*" }

// workerFromActive returns the worker of an active hash key, and false
// for any other key.
func (k keyspace) workerFromActive(key string) (string, bool) {
	w, ok := strings.CutPrefix(key, k.activePrefix())
	return w, ok && w != ""
}

// completed is the hash of results: "jobs:completed".
func (k keyspace) completed() string { return k.queuePrefix() + "completed" }

// failed is the hash of failures: "jobs:failed".
func (k keyspace) failed() string { return k.queuePrefix() + "failed" }

// recordPattern is the SCAN pattern that matches every record key of the
// namespace, and also its sub-keys, which callers tell apart with
// parseRecordKey.
func (k keyspace) recordPattern() string { return k.recordPrefix() + "*" }

// parseRecordKey splits a key of the record pattern: the id, the sub-key
// suffix ("" for the record itself), and false for keys that belong to no
// job (an id that is not valid, or a key outside the namespace). Ids
// never contain ':', so the first ':' after the prefix starts the suffix.
func (k keyspace) parseRecordKey(key string) (id, suffix string, ok bool) {
	rest, found := strings.CutPrefix(key, k.recordPrefix())
	if !found {
		return "", "", false
	}
	id, suffix, hasSub := strings.Cut(rest, ":")
	if validateID(id) != nil || (hasSub && suffix == "") {
		return "", "", false
	}
	return id, suffix, true
}

// Keys outside both namespaces, under the prefix.

func workerKey(prefix, worker string) string    { return prefix + "worker:" + worker }
func heartbeatKey(prefix, worker string) string { return workerKey(prefix, worker) + ":heartbeat" }
func workersActiveKey(prefix string) string     { return prefix + "workers:active" }
func progressStreamKey(prefix, id string) string {
	return prefix + "progress:" + id
}

// heartbeatPattern matches every worker's heartbeat key.
func heartbeatPattern(prefix string) string { return prefix + "worker:*:heartbeat" }

// channel returns a pub/sub channel under the prefix. Without a prefix
// it is the legacy channel itself; tests use a prefix to stay apart.
func channel(prefix, name string) string { return prefix + name }

// Keys of jobstore's own. They lie outside both namespaces, so no record
// scan, backfill or cleanup ever matches them.

// stageKey is the hash holding the shared stage that FollowStage reads and
// PublishStage writes.
func stageKey(prefix string) string { return prefix + "jobstore:stage" }

// statsKey is the hash where FollowStage adds each process's counters, so
// that operators see the dual-write success rate of the whole fleet.
func statsKey(prefix string) string { return prefix + "jobstore:stats" }

// checkpointKey is the string where Backfill keeps the progress of an
// unfinished run that copies from one namespace to the other. Cleanup and
// rollback delete it with the namespace, as it means nothing once one side
// is gone.
func checkpointKey(prefix string, from, to Namespace) string {
	return prefix + "jobstore:backfill:" + from.String() + "-to-" + to.String()
}

// fleetKey is the check-in of one process running FollowStage, a JSON
// string that expires when the process stops checking in.
func fleetKey(prefix, process string) string { return prefix + "jobstore:fleet:" + process }

// fleetPattern matches every process's check-in.
func fleetPattern(prefix string) string { return prefix + "jobstore:fleet:*" }

// voidKey is the set of the tokens of a worker's claims that must take
// nothing when they reach Redis: claims whose callers gave up on them (a
// deadline, a cut connection) and whose tokens a later claim of the
// worker carried and found on no job. It expires an hour after the last
// such claim. Like worker:<id> it belongs to no namespace, so it is not
// mirrored.
func voidKey(prefix, worker string) string { return prefix + "jobstore:void:" + worker }

// followerKey is the hash where followers report what they mirrored, and
// when they last mirrored a legacy write.
func followerKey(prefix string) string { return prefix + "jobstore:follower" }

// ---------------------------------------------------------------------------
// Keys of the migration tools (Backfill, Verify, Cleanup, NamespaceStats).
//
// A job owns, in each namespace: its record, its sub-keys, its member of
// pending, its field in the active hash of any worker, and its fields of
// completed and failed. Nothing else under the namespace's words belongs
// to a job: jobsummary, jobs:pending:old, jobs:active (no worker) and
// job:<invalid id> are look-alikes that the tools never copy, compare or
// delete.
//
// Backfill's record script derives a worker's active hash in Lua from the
// worker_id field of a record, as activePrefix followed by the worker id:
// the rule of keyspace.active, with the prefix passed from Go.

// subKeyPattern is the SCAN pattern of the namespace's sub-keys,
// job:<id>:<suffix>. It matches no record, as ids never contain ':'.
func (k keyspace) subKeyPattern() string { return k.recordPrefix() + "*:*" }

// checkpointKeys are Backfill's checkpoints in both directions.
func checkpointKeys(prefix string) []string {
	return []string{
		checkpointKey(prefix, JobNamespace, StepNamespace),
		checkpointKey(prefix, StepNamespace, JobNamespace),
	}
}
