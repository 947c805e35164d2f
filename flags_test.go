package jobstore

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseFlag(t *testing.T) {
	for _, v := range []string{"true", "TRUE", "True", "1", "yes", "YES", "on", "On", " true\n"} {
		got, err := parseFlag(v)
		require.NoError(t, err, v)
		require.True(t, got, v)
	}
	for _, v := range []string{"false", "FALSE", "0", "no", "No", "off", "OFF"} {
		got, err := parseFlag(v)
		require.NoError(t, err, v)
		require.False(t, got, v)
	}
	for _, v := range []string{"", "ture", "2", "y", "n", "enable", "-1"} {
		_, err := parseFlag(v)
		require.Error(t, err, v)
		require.ErrorContains(t, err, "is not a boolean")
	}
}
