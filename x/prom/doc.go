// Package prom exports jobstore's counters as Prometheus metrics. It is a
// module of its own, so that importers of jobstore who do not use it never
// see its dependencies.
package prom
