package prom_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/alicebob/miniredis/v2"
	"github.com/jobstep/jobstore"
	"github.com/jobstep/jobstore/x/prom"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
)

// The Collector comes first, so that the Store can be given its latency
// observer; the Store is attached to it after.
func ExampleNewCollector() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	c := prom.NewCollector(nil)
	store, err := jobstore.New(rdb, jobstore.WithDualWrite(true), jobstore.WithOpObserver(c.Observer()))
	if err != nil {
		panic(err)
	}
	c.SetStore(store)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	if _, err := store.SubmitJob(context.Background(), jobstore.Job{Service: "comfyui"}); err != nil {
		panic(err)
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "jobstore_stage") || strings.HasPrefix(l, "jobstore_dual_write_attempted_total") ||
			strings.HasPrefix(l, "jobstore_operation_duration_seconds_count") {
			fmt.Println(l)
		}
	}
	// Output:
	// jobstore_dual_write_attempted_total 1
	// jobstore_operation_duration_seconds_count{op="submit",outcome="ok"} 1
	// jobstore_stage{stage="dual-read"} 0
	// jobstore_stage{stage="dual-write"} 1
	// jobstore_stage{stage="legacy"} 0
	// jobstore_stage{stage="step-only"} 0
	// jobstore_stage{stage="step-primary"} 0
}
