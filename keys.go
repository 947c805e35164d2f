package jobstore

// Every Redis key name jobstore reads or writes is built in this file, by
// small pure functions. Scripts receive the names in KEYS and never build
// them, so a key layout change is a change here and nowhere else.

// Queue names one of the sorted sets that index job records. The same four
// queues exist in both namespaces: jobs:pending and steps:pending, and so on.
type Queue string

// The queues of a namespace.
const (
	// QueuePending holds ids waiting for a worker. The score orders claims:
	// highest first, so higher priority first, then oldest first.
	QueuePending Queue = "pending"
	// QueueActive holds claimed ids scored by their lease deadline (Unix ms).
	QueueActive Queue = "active"
	// QueueCompleted holds completed ids scored by completion time (Unix ms).
	QueueCompleted Queue = "completed"
	// QueueFailed holds failed and cancelled ids scored by the time they
	// ended (Unix ms).
	QueueFailed Queue = "failed"
)

// Queues lists every queue of a namespace, in a fixed order.
var Queues = []Queue{QueuePending, QueueActive, QueueCompleted, QueueFailed}

// Namespace is one of the two key layouts: the legacy job:<id> / jobs:<queue>
// and the new step:<id> / steps:<queue>. The zero value is not useful; use
// JobNamespace or StepNamespace.
type Namespace struct {
	// Record is the prefix of record keys, "job:" or "step:".
	Record string
	// Queue is the prefix of queue keys, "jobs:" or "steps:".
	Queue string
}

var (
	// JobNamespace is the legacy layout, job:<id> and jobs:<queue>.
	JobNamespace = Namespace{Record: "job:", Queue: "jobs:"}
	// StepNamespace is the new layout, step:<id> and steps:<queue>.
	StepNamespace = Namespace{Record: "step:", Queue: "steps:"}
)

// String returns the record prefix without its colon: "job" or "step".
func (n Namespace) String() string {
	if len(n.Record) == 0 {
		return ""
	}
	return n.Record[:len(n.Record)-1]
}

// keyspace is a namespace under an optional key prefix (WithKeyPrefix). It
// is the only type that turns ids and queues into key names.
type keyspace struct {
	prefix string
	ns     Namespace
}

// record returns the key of the record with the given id, e.g. "job:42".
func (k keyspace) record(id string) string { return k.prefix + k.ns.Record + id }

// queue returns the key of the given queue, e.g. "jobs:pending".
func (k keyspace) queue(q Queue) string { return k.prefix + k.ns.Queue + string(q) }

// recordPattern is the SCAN pattern that matches every record key of the
// namespace, and also sub-keys such as job:<id>:progress, which callers must
// filter out with idFromRecordKey.
func (k keyspace) recordPattern() string { return k.prefix + k.ns.Record + "*" }

// idFromRecordKey returns the id of a record key of this namespace, and
// false for any other key: a queue key, a key of the other namespace, or a
// sub-key like job:<id>:progress (ids never contain ':').
func (k keyspace) idFromRecordKey(key string) (string, bool) {
	p := k.prefix + k.ns.Record
	if len(key) <= len(p) || key[:len(p)] != p {
		return "", false
	}
	id := key[len(p):]
	if validateID(id) != nil {
		return "", false
	}
	return id, true
}

// JobKey returns the legacy record key of id: "job:<id>".
func JobKey(id string) string { return keyspace{ns: JobNamespace}.record(id) }

// StepKey returns the new record key of id: "step:<id>".
func StepKey(id string) string { return keyspace{ns: StepNamespace}.record(id) }

// JobsQueueKey returns the legacy key of a queue: "jobs:<queue>".
func JobsQueueKey(q Queue) string { return keyspace{ns: JobNamespace}.queue(q) }

// StepsQueueKey returns the new key of a queue: "steps:<queue>".
func StepsQueueKey(q Queue) string { return keyspace{ns: StepNamespace}.queue(q) }

// stageKey is the hash holding the shared stage that FollowStage reads and
// PublishStage writes. It lies outside both namespaces, so no record scan,
// backfill or cleanup ever matches it.
func stageKey(prefix string) string { return prefix + "jobstore:stage" }

// SharedStageKey is the key of the hash that holds the shared stage (see
// Store.PublishStage), for a Store created with WithKeyPrefix(prefix):
// "jobstore:stage" without a prefix.
func SharedStageKey(prefix string) string { return stageKey(prefix) }

// statsKey is the hash where FollowStage adds each process's counters, so
// that operators see the dual-write success rate of the whole fleet.
func statsKey(prefix string) string { return prefix + "jobstore:stats" }

// checkpointKey is the string where Backfill keeps the progress of an
// unfinished run that copies from one namespace to the other. Like the
// stage key it lies outside both namespaces; cleanup and rollback delete
// it with the namespace, as it means nothing once one side is gone.
func checkpointKey(prefix string, from, to Namespace) string {
	return prefix + "jobstore:backfill:" + from.String() + "-to-" + to.String()
}

// queueAndRecordKeys lists, for scripts that sync ids between namespaces,
// the four queues (in Queues order) and then the record of each id, in a,
// followed by the same keys in b: the key of a's KEYS[i] in b is at
// KEYS[i+N], as the prelude's mirror convention wants.
func queueAndRecordKeys(a, b keyspace, ids []string) []string {
	refs := make([]keyRef, 0, len(Queues)+len(ids))
	for _, q := range Queues {
		refs = append(refs, queueRef(q))
	}
	for _, id := range ids {
		refs = append(refs, recordRef(id))
	}
	return b.keys(a.keys(make([]string, 0, 2*len(refs)), refs), refs)
}
