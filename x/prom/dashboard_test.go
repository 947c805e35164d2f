package prom_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

const dashboardFile = "dashboards/jobstore-migration.json"

// TestDashboardQueries reads every PromQL expression of the dashboard and
// checks that it names only metrics the Collector exports (a histogram's
// by its _bucket, _sum and _count series), and only labels those metrics
// have, in its matchers, its by/without/on/ignoring lists and its legend.
// The metrics come from a scrape of a Collector with every source on.
func TestDashboardQueries(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	require.NoError(t, err)
	var dash map[string]any
	require.NoError(t, json.Unmarshal(raw, &dash), "the dashboard is JSON")
	require.NotEmpty(t, dash["title"])
	require.NotEmpty(t, dash["uid"])

	f, _ := fullScrape(t)
	labels := map[string][]string{} // every series name a query may select, with its labels
	for name, mf := range f {
		ls := f.labelNames(name)
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			labels[name+"_bucket"] = append(slices.Clone(ls), "le")
			labels[name+"_sum"] = ls
			labels[name+"_count"] = ls
			continue
		}
		labels[name] = ls
	}
	targetLabels := []string{"job", "instance"} // added by Prometheus to every series

	queries := dashboardQueries(dash)
	require.NotEmpty(t, queries)
	used := map[string]bool{}
	for _, q := range queries {
		t.Run(q.panel+"/"+q.refID, func(t *testing.T) {
			refs, err := parseRefs(q.expr)
			require.NoError(t, err, q.expr)
			require.NotEmpty(t, refs.selectors, "the query reads a metric: %s", q.expr)
			allowed := slices.Clone(targetLabels)
			for _, s := range refs.selectors {
				have, ok := labels[s.name]
				require.True(t, ok, "the Collector exports %s (in %s)", s.name, q.expr)
				used[s.name] = true
				for _, l := range s.labels {
					require.Contains(t, append(slices.Clone(have), targetLabels...), l, "%s has label %s", s.name, l)
				}
				allowed = append(allowed, have...)
			}
			for _, l := range refs.grouping {
				require.Contains(t, allowed, l, "label %s of a grouping in %s is on a metric it reads", l, q.expr)
			}
			for _, m := range regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`).FindAllStringSubmatch(q.legend, -1) {
				require.Contains(t, allowed, m[1], "legend %q names a label the query can have", q.legend)
			}
		})
	}
	// What the migration's operators asked to see.
	for _, m := range []string{
		"jobstore_stage", "jobstore_fleet_process_stage",
		"jobstore_dual_write_attempted_total", "jobstore_dual_write_failed_total",
		"jobstore_operation_duration_seconds_bucket",
		"jobstore_follower_lag_p99_seconds", "jobstore_backfill_done_items", "jobstore_backfill_expected_items",
		"jobstore_queue_jobs", "jobstore_read_fallbacks_total",
	} {
		require.True(t, used[m], "the dashboard charts %s", m)
	}
}

type query struct{ panel, refID, expr, legend string }

// dashboardQueries returns the Prometheus queries of every panel (rows'
// panels included) and of the query variables.
func dashboardQueries(dash map[string]any) []query {
	var out []query
	var walk func(panels []any)
	walk = func(panels []any) {
		for _, p := range panels {
			pm, _ := p.(map[string]any)
			title, _ := pm["title"].(string)
			targets, _ := pm["targets"].([]any)
			for _, tg := range targets {
				tm, _ := tg.(map[string]any)
				expr, _ := tm["expr"].(string)
				ref, _ := tm["refId"].(string)
				legend, _ := tm["legendFormat"].(string)
				out = append(out, query{title, ref, expr, legend})
			}
			sub, _ := pm["panels"].([]any)
			walk(sub)
		}
	}
	panels, _ := dash["panels"].([]any)
	walk(panels)
	tmpl, _ := dash["templating"].(map[string]any)
	vars, _ := tmpl["list"].([]any)
	for _, v := range vars {
		vm, _ := v.(map[string]any)
		if vm["type"] != "query" {
			continue
		}
		q := vm["query"]
		if qm, ok := q.(map[string]any); ok {
			q = qm["query"]
		}
		if s, _ := q.(string); s != "" {
			out = append(out, query{"variable " + fmt.Sprint(vm["name"]), "", s, ""})
		}
	}
	return out
}

// refs is what a PromQL expression reads: its selectors, and the label
// names of its by, without, on, ignoring, group_left and group_right lists.
type refs struct {
	selectors []selector
	grouping  []string
}

type selector struct {
	name   string
	labels []string // label names of its matchers
}

var (
	grafanaVar = regexp.MustCompile(`\$\{[^}]*\}|\$\w+`)
	// aggregations and functions of PromQL; an unknown function is an error.
	aggregations = set("sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
		"count_values", "group", "limitk", "limit_ratio")
	functions = set("abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
		"day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor",
		"histogram_avg", "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_sum",
		"histogram_stddev", "histogram_stdvar", "hour", "idelta", "increase", "irate", "label_join", "label_replace",
		"ln", "log10", "log2", "minute", "month", "predict_linear", "rate", "resets", "round", "scalar", "sgn",
		"sort", "sort_desc", "sqrt", "time", "timestamp", "vector", "year", "avg_over_time", "min_over_time",
		"max_over_time", "sum_over_time", "count_over_time", "quantile_over_time", "stddev_over_time",
		"stdvar_over_time", "last_over_time", "present_over_time", "start", "end")
	groupings = set("by", "without", "on", "ignoring", "group_left", "group_right")
	operators = set("and", "or", "unless", "bool", "atan2", "inf", "nan")
)

func set(words ...string) map[string]bool {
	m := map[string]bool{}
	for _, w := range words {
		m[w] = true
	}
	return m
}

// parseRefs reads the metric names and label names of a PromQL expression
// with Grafana variables in it. It is a lexer, not a parser: it knows
// strings, ranges, numbers, label matchers, grouping lists, keywords and
// function calls, which is all a metric name can hide among.
func parseRefs(expr string) (refs, error) {
	s := grafanaVar.ReplaceAllString(expr, "5m")
	var r refs
	i := 0
	skipSpace := func() {
		for i < len(s) && strings.ContainsRune(" \t\r\n", rune(s[i])) {
			i++
		}
	}
	skipString := func() error {
		q := s[i]
		for i++; i < len(s); i++ {
			switch {
			case s[i] == '\\' && q != '`':
				i++
			case s[i] == q:
				i++
				return nil
			}
		}
		return fmt.Errorf("unterminated string in %q", expr)
	}
	ident := func() string {
		j := i
		for i < len(s) && (isIdentByte(s[i]) || (i > j && s[i] >= '0' && s[i] <= '9')) {
			i++
		}
		return s[j:i]
	}
	for i < len(s) {
		c := s[i]
		switch {
		case strings.ContainsRune(" \t\r\n", rune(c)):
			i++
		case c == '"' || c == '\'' || c == '`':
			if err := skipString(); err != nil {
				return r, err
			}
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '[':
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				return r, fmt.Errorf("unterminated range in %q", expr)
			}
			i += j + 1
		case c == '{':
			return r, fmt.Errorf("a selector without a metric name in %q", expr)
		case c >= '0' && c <= '9' || (c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9'):
			for i < len(s) && (isIdentByte(s[i]) || s[i] == '.' || (s[i] >= '0' && s[i] <= '9')) {
				i++
			}
		case isIdentByte(c):
			word := ident()
			lw := strings.ToLower(word)
			skipSpace()
			switch {
			case groupings[lw]:
				if i < len(s) && s[i] == '(' {
					end := strings.IndexByte(s[i:], ')')
					if end < 0 {
						return r, fmt.Errorf("unterminated %s list in %q", lw, expr)
					}
					for _, l := range strings.Split(s[i+1:i+end], ",") {
						if l = strings.TrimSpace(l); l != "" {
							r.grouping = append(r.grouping, l)
						}
					}
					i += end + 1
				}
			case operators[lw], aggregations[lw]:
			case lw == "offset":
				for i < len(s) && (isIdentByte(s[i]) || s[i] >= '0' && s[i] <= '9' || s[i] == '-') {
					i++
				}
			case i < len(s) && s[i] == '(':
				if !functions[lw] {
					return r, fmt.Errorf("unknown function %s in %q", word, expr)
				}
			default:
				sel := selector{name: word}
				if i < len(s) && s[i] == '{' {
					i++
					for {
						skipSpace()
						if i >= len(s) {
							return r, fmt.Errorf("unterminated matchers in %q", expr)
						}
						if s[i] == '}' {
							i++
							break
						}
						l := ident()
						if l == "" {
							return r, fmt.Errorf("bad matcher at %q in %q", s[i:], expr)
						}
						sel.labels = append(sel.labels, l)
						skipSpace()
						for i < len(s) && strings.ContainsRune("=!~", rune(s[i])) {
							i++
						}
						skipSpace()
						if i >= len(s) || !strings.ContainsRune("\"'`", rune(s[i])) {
							return r, fmt.Errorf("matcher of %s without a string in %q", l, expr)
						}
						if err := skipString(); err != nil {
							return r, err
						}
						skipSpace()
						if i < len(s) && s[i] == ',' {
							i++
						}
					}
				}
				r.selectors = append(r.selectors, sel)
			}
		default:
			i++
		}
	}
	return r, nil
}

func isIdentByte(c byte) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// TestParseRefs: the lexer finds metric names among what hides them.
func TestParseRefs(t *testing.T) {
	for _, c := range []struct {
		expr     string
		names    []string
		labels   []string // all matcher labels, in order
		grouping []string
		err      string
	}{
		{expr: `up`, names: []string{"up"}},
		{expr: `sum by (op) (rate(a_total{x="1", y=~"b|c"}[$__rate_interval]))`, names: []string{"a_total"}, labels: []string{"x", "y"}, grouping: []string{"op"}},
		{expr: `histogram_quantile(0.99, sum by (op, le) (rate(h_bucket[5m])))`, names: []string{"h_bucket"}, grouping: []string{"op", "le"}},
		{expr: `sum(x) without(a) / on(b) group_left(c) y offset 1h`, names: []string{"x", "y"}, grouping: []string{"a", "b", "c"}},
		{expr: `1 - a / b > bool 0.5 and c or vector(0)`, names: []string{"a", "b", "c"}},
		{expr: `time() - max(ts_seconds{job="$job"}) * 1e3`, names: []string{"ts_seconds"}, labels: []string{"job"}},
		{expr: `label_replace(m, "dst", "$1", "src", "(.*)")`, names: []string{"m"}},
		{expr: `count(m > 60) or vector(0) # comment naming not_a_metric`, names: []string{"m"}},
		{expr: `rat(m[5m])`, err: "unknown function rat"},
		{expr: `{__name__="m"}`, err: "without a metric name"},
	} {
		r, err := parseRefs(c.expr)
		if c.err != "" {
			require.ErrorContains(t, err, c.err, c.expr)
			continue
		}
		require.NoError(t, err, c.expr)
		var names, labels []string
		for _, s := range r.selectors {
			names = append(names, s.name)
			labels = append(labels, s.labels...)
		}
		require.Equal(t, c.names, names, c.expr)
		require.Equal(t, c.labels, labels, c.expr)
		require.Equal(t, c.grouping, r.grouping, c.expr)
	}
}
