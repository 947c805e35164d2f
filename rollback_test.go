package jobstore

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRollbackOneStage moves a fleet of two processes one stage back from
// every stage, one process at a time as a rolling restart does, while
// jobs are submitted, claimed, failed and completed throughout. Every job
// must be completed exactly once. From step-only, job:* was not written,
// so the runbook's procedure follows: back to step-primary, a reverse
// backfill, a verify, and only then further back to dual-read, where
// job:* is authoritative again and must hold every job.
func TestRollbackOneStage(t *testing.T) {
	for _, from := range Stages[1:] {
		to := from - 1
		t.Run(from.String()+"→"+to.String(), func(t *testing.T) {
			eachBackend(t, func(t *testing.T, b *backend) {
				stores := []*Store{newStore(t, b, WithStage(from)), newStore(t, b, WithStage(from))}
				const third = 15
				var mu sync.Mutex
				completed := map[string]int{}
				var submitted []string
				gate, step := make(chan struct{}, 2), make(chan struct{})
				var finished atomic.Bool
				var wg sync.WaitGroup
				errs := make(chan error, 4)

				wg.Add(1)
				go func() { // the API side: a third of the jobs per phase of the switch
					defer wg.Done()
					defer close(step)
					for i := range 3 * third {
						id := fmt.Sprint("job", i)
						if _, err := stores[i%2].SubmitJob(ctx, Job{ID: id, Service: "s", Priority: i % 4}); err != nil {
							errs <- err
							return
						}
						mu.Lock()
						submitted = append(submitted, id)
						mu.Unlock()
						if (i+1)%third == 0 && i+1 < 3*third {
							step <- struct{}{}
							<-gate
						}
					}
				}()
				var workers sync.WaitGroup
				for wi, s := range stores {
					workers.Add(1)
					go func() { // the worker side, on each process
						defer workers.Done()
						w := fmt.Sprint("w", wi)
						for {
							j, err := s.ClaimJob(ctx, w)
							if errors.Is(err, ErrNoJob) {
								if finished.Load() {
									return
								}
								time.Sleep(time.Millisecond)
								continue
							}
							if err == nil && j.RetryCount == 0 && len(j.ID)%2 == 0 {
								err = s.FailJob(ctx, j.ID, w, "retry me")
							} else if err == nil {
								if err = s.CompleteJob(ctx, j.ID, w, nil); err == nil {
									mu.Lock()
									completed[j.ID]++
									mu.Unlock()
								}
							}
							if err != nil {
								errs <- err
								return
							}
						}
					}()
				}

				<-step // a third submitted: the first process moves back
				require.NoError(t, stores[0].SetStage(to))
				gate <- struct{}{}
				<-step // two thirds: the second one follows
				require.NoError(t, stores[1].SetStage(to))
				if from == StageStepOnly {
					// As the runbook says: let what started under the old
					// stage land before copying.
					for _, s := range stores {
						require.NoError(t, s.AwaitStage(ctx))
					}
					// job:* missed everything done in step-only: copy it
					// back while the load goes on.
					res, err := stores[0].Backfill(ctx, BackfillOptions{Reverse: true, BatchSize: 8})
					require.NoError(t, err)
					require.Positive(t, res.Copied)
				}
				gate <- struct{}{}
				<-step
				wg.Wait()
				finished.Store(true)
				workers.Wait()
				close(errs)
				for err := range errs {
					require.NoError(t, err)
				}

				final := to
				if from == StageStepOnly {
					vr, err := stores[0].Verify(ctx, quick)
					require.NoError(t, err)
					require.Zero(t, vr.Differences(), "%v", vr.Diffs)
					for _, s := range stores {
						require.NoError(t, s.SetStage(StageDualRead))
					}
					final = StageDualRead
				}
				// Whatever the stage's claims left is drained by the fleet.
				for {
					j, err := stores[1].ClaimJob(ctx, "drain")
					if errors.Is(err, ErrNoJob) {
						break
					}
					require.NoError(t, err)
					require.NoError(t, stores[1].CompleteJob(ctx, j.ID, "drain", nil))
					completed[j.ID]++
				}
				require.Len(t, submitted, 3*third)
				for _, id := range submitted {
					require.Equal(t, 1, completed[id], "job %s completed %d times", id, completed[id])
					st, err := b.rdb.HGet(ctx, stores[0].space(final.Primary()).record(id), "status").Result()
					require.NoError(t, err)
					require.Equal(t, "completed", st, "job %s in the authoritative namespace", id)
				}
				if final.DualWrites() {
					requireMirrored(t, b)
				}
			})
		})
	}
}
