package jobstore

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"
)

// benchBackend is the real server when JOBSTORE_TEST_REDIS_URL is set,
// else miniredis. Figures on miniredis measure the library, not Redis.
func benchBackend(b *testing.B) *backend {
	if os.Getenv(envTestRedis) != "" {
		return realBackend(b)
	}
	return miniBackend(b)
}

var benchPayload = json.RawMessage(`{"prompt":"a photo of a red fox in the snow","steps":30,"seed":42}`)

// BenchmarkSubmitJob measures SubmitJob with dual-write off and on, one
// goroutine at a time and in parallel. The ratio on/off is the cost of
// mirroring: the mirror rides in the same script, so no second round trip.
func BenchmarkSubmitJob(b *testing.B) {
	for _, dual := range []bool{false, true} {
		name := fmt.Sprintf("dualwrite=%v", map[bool]string{false: "off", true: "on"}[dual])
		b.Run(name, func(b *testing.B) {
			be := benchBackend(b)
			s := newStore(b, be, WithDualWrite(dual))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.SubmitJob(ctx, Job{Service: "comfyui", Priority: 50, Payload: benchPayload, CustomerID: "c1"}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/parallel", func(b *testing.B) {
			be := benchBackend(b)
			s := newStore(b, be, WithDualWrite(dual))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.SubmitJob(ctx, Job{Service: "comfyui", Priority: 50, Payload: benchPayload, CustomerID: "c1"}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkClaimComplete measures one worker cycle, claim then complete,
// with dual-write on.
func BenchmarkClaimComplete(b *testing.B) {
	be := benchBackend(b)
	s := newStore(b, be, WithDualWrite(true))
	for i := 0; i < b.N; i++ {
		if _, err := s.SubmitJob(ctx, Job{Service: "comfyui", Payload: benchPayload}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j, err := s.ClaimJob(ctx, "w1", "comfyui")
		if err != nil {
			b.Fatal(err)
		}
		if err := s.CompleteJob(ctx, j.ID, "w1", nil); err != nil {
			b.Fatal(err)
		}
	}
}
