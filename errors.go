package jobstore

import "errors"

// Sentinel errors. Every error jobstore returns for one of these conditions
// wraps the sentinel, so test for them with errors.Is; the wrapping message
// names the id, field or value at fault. redis.Nil never reaches callers.
var (
	// ErrJobNotFound: no record exists for the id.
	ErrJobNotFound = errors.New("jobstore: job not found")
	// ErrJobExists: SubmitJob was given the id of a record that exists.
	ErrJobExists = errors.New("jobstore: job already exists")
	// ErrNoJob: ClaimJob found no pending job, in its window, that the
	// worker's capabilities match.
	ErrNoJob = errors.New("jobstore: no job available")
	// ErrNotRegistered: ClaimJob was called for a worker without a
	// heartbeat; register it (RegisterWorker) and keep it alive
	// (KeepAlive) first.
	ErrNotRegistered = errors.New("jobstore: worker is not registered or its heartbeat expired")
	// ErrNotHeld: the worker does not hold the job it tried to start,
	// report on, complete or fail: the job is not in its active hash.
	// Nothing was changed.
	ErrNotHeld = errors.New("jobstore: job is not held by this worker")
	// ErrJobFinished: the job already completed, failed or was cancelled.
	ErrJobFinished = errors.New("jobstore: job already finished")
	// ErrCorruptRecord: a record or queue in Redis cannot be used: a key
	// of the wrong type, or a record without an id field or with another
	// job's. (Fields that do not parse get defaults; see Job.Unreadable.)
	ErrCorruptRecord = errors.New("jobstore: corrupt record")

	// ErrInvalidID: an id is empty, longer than MaxIDLength bytes, not
	// UTF-8, or contains whitespace, a control character or one of *?[]{}:\
	ErrInvalidID = errors.New("jobstore: invalid id")
	// ErrInvalidService: a service name is empty, too long or malformed.
	ErrInvalidService = errors.New("jobstore: invalid service name")
	// ErrInvalidPriority: a priority is outside 0..MaxPriority.
	ErrInvalidPriority = errors.New("jobstore: invalid priority")
	// ErrInvalidPayload: a payload, requirements or result is not valid JSON.
	ErrInvalidPayload = errors.New("jobstore: invalid JSON payload")
	// ErrPayloadTooLarge: a payload or result exceeds the configured limit.
	ErrPayloadTooLarge = errors.New("jobstore: payload too large")
	// ErrInvalidMaxRetries: max retries is negative or absurdly large.
	ErrInvalidMaxRetries = errors.New("jobstore: invalid max retries")
	// ErrInvalidWorker: a worker id is empty, too long or malformed.
	ErrInvalidWorker = errors.New("jobstore: invalid worker id")
	// ErrInvalidArgument: any other argument that cannot be used, such as
	// a negative limit or an unknown extra field name.
	ErrInvalidArgument = errors.New("jobstore: invalid argument")

	// ErrStageJump: a stage change of more than one stage at a time, which
	// SetStage and PublishStage refuse unless forced.
	ErrStageJump = errors.New("jobstore: stage change skips a stage")

	// ErrLegacyAlive: PublishStage was asked for dual-read or a later
	// stage while a legacy process looks alive (a legacy worker's
	// heartbeat, or a legacy write a follower mirrored recently). The
	// message names the evidence; PublishOptions.Force overrides it.
	ErrLegacyAlive = errors.New("jobstore: legacy processes are still running")

	// ErrNamespaceInUse: Cleanup was asked to delete a namespace that the
	// current stage still reads or writes. Move every process to the
	// stage the message names first.
	ErrNamespaceInUse = errors.New("jobstore: namespace still in use")
	// ErrCleanupRefused: the verification that Cleanup runs first found
	// differences that deleting the namespace would lose.
	ErrCleanupRefused = errors.New("jobstore: cleanup refused")

	// ErrInvalidConfig: New was given an option or environment value it
	// cannot use. The message names the option or variable and the value.
	ErrInvalidConfig = errors.New("jobstore: invalid configuration")
	// ErrClusterUnsupported: New was given a *redis.ClusterClient. The
	// legacy layout puts a record and its queues in different hash slots,
	// so its writes cannot be atomic on a cluster.
	ErrClusterUnsupported = errors.New("jobstore: redis cluster is not supported")
)
