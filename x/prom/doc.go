// Package prom exports jobstore's counters as Prometheus metrics. It is a
// module of its own, so that importers of jobstore who do not use it never
// see its dependencies.
//
// Create the Collector, then the Store with its latency observer, attach
// the Store, and register the Collector:
//
//	c := prom.NewCollector(nil, prom.WithQueueSizes(time.Minute))
//	store, err := jobstore.New(rdb, jobstore.WithOpObserver(c.Observer()))
//	...
//	c.SetStore(store)
//	prometheus.MustRegister(c)
//	http.Handle("/metrics", promhttp.Handler())
//
// The Collector reads the Store's counters when it is scraped; nothing runs
// in the background. README.md lists the metrics, and
// dashboards/jobstore-migration.json is a Grafana dashboard of them.
package prom
