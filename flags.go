package jobstore

import (
	"fmt"
	"os"
	"strings"
)

// EnvDualWrite is the environment variable of the phase 4.3.1 report. New
// reads it when neither WithDualWrite nor WithStage is given: true, 1, yes
// or on (in any case) selects StageDualWrite; false, 0, no, off, empty or
// unset select StageLegacy. Any other value is an error from New, never a
// silent default.
const EnvDualWrite = "REDIS_DUAL_WRITE_STEPS"

// EnvStage selects the migration stage for the later phases: legacy,
// dual-write, dual-read, step-primary or step-only. When EnvDualWrite is
// set too, the two must agree: true goes with the stages that write both
// namespaces (dual-write, dual-read, step-primary), false with the others.
// A shared stage in Redis (see Store.FollowStage) overrides both once read.
const EnvStage = "REDIS_STEP_MIGRATION_STAGE"

// parseFlag parses a boolean flag the way New reads EnvDualWrite: true/false,
// 1/0, yes/no and on/off in any case, with surrounding spaces ignored.
func parseFlag(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "1", "yes", "on":
		return true, nil
	case "false", "0", "no", "off":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (want true/false, 1/0, yes/no or on/off)", s)
}

// envLookup is os.LookupEnv; options replace it in tests.
type envLookup func(string) (string, bool)

// stageFromEnv reads EnvStage and EnvDualWrite. Empty values count as
// unset.
func stageFromEnv(lookup envLookup) (Stage, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	get := func(name string) (string, bool) {
		v, ok := lookup(name)
		return v, ok && strings.TrimSpace(v) != ""
	}
	flagValue, flagSet := get(EnvDualWrite)
	var dual bool
	if flagSet {
		var err error
		if dual, err = parseFlag(flagValue); err != nil {
			return 0, fmt.Errorf("%w: %s=%q: %v", ErrInvalidConfig, EnvDualWrite, flagValue, err)
		}
	}
	stageValue, stageSet := get(EnvStage)
	if !stageSet {
		if dual {
			return StageDualWrite, nil
		}
		return StageLegacy, nil
	}
	st, err := ParseStage(stageValue)
	if err != nil {
		return 0, fmt.Errorf("%w: %s=%q: %v", ErrInvalidConfig, EnvStage, stageValue, err)
	}
	if flagSet && dual != st.DualWrites() {
		return 0, fmt.Errorf("%w: %s=%q contradicts %s=%q: stage %s %s both namespaces",
			ErrInvalidConfig, EnvDualWrite, flagValue, EnvStage, stageValue, st, map[bool]string{true: "writes", false: "does not write"}[st.DualWrites()])
	}
	return st, nil
}
