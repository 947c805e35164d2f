package jobstore

import (
	"fmt"
	"os"
	"strings"
)

// EnvDualWrite is the environment variable of the phase 4.3.1 report. New
// reads it when no WithDualWrite option is given: true, 1, yes or on (in any
// case) turns dual-write on; false, 0, no, off, empty or unset leave it off.
// Any other value is an error from New, never a silent default.
const EnvDualWrite = "REDIS_DUAL_WRITE_STEPS"

// ParseFlag parses a boolean flag the way New reads EnvDualWrite: true/false,
// 1/0, yes/no and on/off in any case, with surrounding spaces ignored.
func ParseFlag(s string) (bool, error) {
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

// dualWriteFromEnv reads EnvDualWrite. An empty value counts as unset.
func dualWriteFromEnv(lookup envLookup) (bool, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	v, ok := lookup(EnvDualWrite)
	if !ok || strings.TrimSpace(v) == "" {
		return false, nil
	}
	on, err := ParseFlag(v)
	if err != nil {
		return false, fmt.Errorf("%w: %s=%q: %v", ErrInvalidConfig, EnvDualWrite, v, err)
	}
	return on, nil
}
