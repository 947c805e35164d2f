package jobstore

import (
	"context"
	"strings"

	"github.com/redis/go-redis/v9"
)

// runBatch runs the script once per call in one pipeline, by SHA. If Redis
// has lost the script (after SCRIPT FLUSH or a restart), it loads it and
// runs again the calls that failed for that reason only. err is a failure
// to load the script; per-call errors are in the commands.
func (s *Store) runBatch(ctx context.Context, script *redis.Script, calls []call) ([]*redis.Cmd, error) {
	// Exec's own error is the first command's error; every command keeps
	// its own, including a connection failure, so only those are read.
	exec := func(calls []call) []*redis.Cmd {
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(calls))
		for i, c := range calls {
			cmds[i] = script.EvalSha(ctx, pipe, c.keys, c.argv...)
		}
		_, _ = pipe.Exec(ctx)
		return cmds
	}
	cmds := exec(calls)
	var retry []int
	for i, cmd := range cmds {
		if isNoScript(cmd.Err()) {
			retry = append(retry, i)
		}
	}
	if len(retry) == 0 {
		return cmds, nil
	}
	if err := script.Load(ctx, s.rdb).Err(); err != nil {
		return nil, err
	}
	again := make([]call, len(retry))
	for k, i := range retry {
		again[k] = calls[i]
	}
	more := exec(again)
	for k, i := range retry {
		cmds[i] = more[k]
	}
	return cmds, nil
}

func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}
