package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/jobstep/jobstore"
)

// checkGiven refuses flag values that parse but mean nothing, when the
// operator typed them: --batch, --rounds and --limit below 1 (0 is only
// how the library spells "the default", which leaving the flag out
// already gives) and a batch above the library's maximum, and a --rate
// that is not a finite number (NaN and Inf parse as floats, and would
// silently run without a limit) or so low that pacing it overflows.
// Flags left out keep their defaults.
func checkGiven(fs *flag.FlagSet) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		if err != nil {
			return
		}
		switch f.Name {
		case "batch", "rounds", "limit":
			n, perr := strconv.Atoi(f.Value.String())
			switch {
			case perr != nil || n < 1:
				err = usagef("%s: --%s %s: must be at least 1; leave it out for the default", fs.Name(), f.Name, f.Value)
			case f.Name == "batch" && n > jobstore.MaxBatchSize:
				err = usagef("%s: --batch %s: at most %s", fs.Name(), f.Value, group(jobstore.MaxBatchSize))
			}
		case "rate":
			r, perr := strconv.ParseFloat(f.Value.String(), 64)
			if perr != nil || math.IsNaN(r) || math.IsInf(r, 0) || r < 0 {
				err = usagef("%s: --rate %s: want keys per second, a finite number; 0 or no --rate for no limit", fs.Name(), f.Value)
				return
			}
			if batch := givenBatch(fs); r > 0 && !paceable(r, batch) {
				err = usagef("%s: --rate %s: too slow: one batch of %s keys would take longer than 292 years, more than the pacing can wait; want at least %g keys per second (0 or no --rate: no limit)",
					fs.Name(), f.Value, group(int64(batch)), minRate(batch))
			}
		}
	})
	return err
}

// The library paces a backfill by sleeping until keys looked at / rate
// seconds have passed, a time.Duration: a rate so low that one batch's
// interval does not fit in one overflows, and the run then does not wait
// as asked (or, on some platforms, never goes on). One batch is the most
// a backfill looks at before it first waits.

// paceable reports whether batch keys at rate keys per second take a
// time that a time.Duration holds.
func paceable(rate float64, batch int) bool {
	return float64(batch)/rate*float64(time.Second) < math.MaxInt64
}

// minRate is a rate paceable accepts for batch: the lowest, rounded up to
// three significant digits.
func minRate(batch int) float64 {
	low := float64(batch) * float64(time.Second) / math.MaxInt64
	unit := math.Pow(10, math.Floor(math.Log10(low))-2)
	r := math.Ceil(low/unit) * unit
	for !paceable(r, batch) {
		r += unit
	}
	return r
}

// givenBatch is the --batch of fs when it is given and valid, else the
// library's default.
func givenBatch(fs *flag.FlagSet) int {
	if f := fs.Lookup("batch"); f != nil {
		if n, err := strconv.Atoi(f.Value.String()); err == nil && n >= 1 {
			return n
		}
	}
	return jobstore.DefaultBatchSize
}

// positiveDuration is a flag of a duration that must be above zero.
type positiveDuration struct{ d *time.Duration }

func (p positiveDuration) String() string {
	if p.d == nil || *p.d == 0 {
		return ""
	}
	return p.d.String()
}

func (p positiveDuration) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return fmt.Errorf("want a positive duration such as 500ms, 30s or 2m")
	}
	*p.d = d
	return nil
}

// stageKeyName is the key of the shared stage hash. The library builds it
// (keys.go) but does not export it; the command needs it only to tell
// the operator which key to look at when it cannot be read.
func stageKeyName(prefix string) string { return prefix + "jobstore:stage" }

// unreadableStage turns an error reading the shared stage into one whose
// advice works, said once (the library's message carries advice of its
// own, in the library's terms, so the command says it in its own). A key
// of another type blocks every command, stage set included (PublishStage
// cannot write a hash over it), so the operator must look at it and
// delete it first: it is not deleted here, as a key of the wrong type may
// belong to something else. A stage hash with a value no stage has is
// overwritten by stage set --force, so that command goes on (a.forceStage,
// noting the value in a.badStage) and every other one is told to run it.
// Other errors (the network's) are the library's.
func (a *app) unreadableStage(ctx context.Context, err error) error {
	if !errors.Is(err, jobstore.ErrCorruptRecord) {
		return err
	}
	key := stageKeyName(a.prefix)
	typ, terr := a.rdb.Type(ctx, key).Result()
	if terr == nil && typ != "hash" && typ != "none" {
		return fmt.Errorf("the shared stage key %s is a %s, not a hash: every write ignores it and runs under its process's own stage, "+
			"and no command can write the stage over it; nothing was changed. Look at it (redis-cli TYPE %s), delete it if nothing else uses it "+
			"(redis-cli DEL %s), then publish the stage: stepmigrate stage set NAME --force", key, typ, key, key)
	}
	raw, rerr := a.rdb.HGet(ctx, key, "stage").Result()
	if rerr != nil {
		// Unread again: the library's message, and the command's advice.
		if a.forceStage {
			return nil
		}
		return fmt.Errorf("%v; publish a valid one with: stepmigrate stage set NAME --force", err)
	}
	if a.forceStage {
		a.badStage = &raw
		return nil
	}
	return fmt.Errorf("the shared stage key %s holds unknown stage %q (want %s): every write ignores it and runs under its process's own stage; "+
		"publish a valid one with: stepmigrate stage set NAME --force", key, raw, stageList)
}

// stageList names the stages, in order.
const stageList = "legacy, dual-write, dual-read, step-primary, step-only"
