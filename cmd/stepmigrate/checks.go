package main

import (
	"context"
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
// silently run without a limit). Flags left out keep their defaults.
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
			if r, perr := strconv.ParseFloat(f.Value.String(), 64); perr != nil || math.IsNaN(r) || math.IsInf(r, 0) || r < 0 {
				err = usagef("%s: --rate %s: want keys per second, a finite number; 0 or no --rate for no limit", fs.Name(), f.Value)
			}
		}
	})
	return err
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
// advice works. A key of another type blocks every command, stage set
// included (PublishStage cannot write a hash over it), so the operator
// must look at it and delete it first: it is not deleted here, as a key of
// the wrong type may belong to something else. A stage hash with a value
// no stage has is overwritten by stage set --force, so that command goes
// on (a.forceStage) and every other one is told to run it.
func (a *app) unreadableStage(ctx context.Context, err error) error {
	key := stageKeyName(a.prefix)
	if typ, terr := a.rdb.Type(ctx, key).Result(); terr == nil && typ != "hash" && typ != "none" {
		return fmt.Errorf("the shared stage key %s is a %s, not a hash (%v); nothing was changed. Look at it (redis-cli TYPE %s), delete it if nothing else uses it (redis-cli DEL %s), then publish the stage: stepmigrate stage set NAME --force",
			key, typ, err, key, key)
	}
	if a.forceStage {
		return nil
	}
	return fmt.Errorf("%v; publish a valid one with: stepmigrate stage set NAME --force", err)
}
