package prom

import (
	"encoding/json"
	"go/constant"
	"go/token"
	"go/types"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestREADMEListsEveryMetric: the README's metrics table names every
// metric the Collector describes.
func TestREADMEListsEveryMetric(t *testing.T) {
	raw, err := os.ReadFile("README.md")
	require.NoError(t, err)
	re := regexp.MustCompile(`fqName: "([^"]+)"`)
	for _, d := range allDescs {
		name := re.FindStringSubmatch(d.String())[1]
		require.Contains(t, string(raw), "| `"+name+"` |", "README's table lists %s", name)
	}
}

// TestPublishedStagePanel: the "Published stage" panel shows each stage,
// and something else (that says none) when none is published: every
// series 0, as collectFleet exports it.
func TestPublishedStagePanel(t *testing.T) {
	raw, err := os.ReadFile("dashboards/jobstore-migration.json")
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title       string `json:"title"`
			FieldConfig struct {
				Defaults struct {
					Mappings []struct {
						Type    string `json:"type"`
						Options map[string]struct {
							Text string `json:"text"`
						} `json:"options"`
					} `json:"mappings"`
				} `json:"defaults"`
			} `json:"fieldConfig"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	stages := []string{"legacy", "dual-write", "dual-read", "step-primary", "step-only"}
	sel := regexp.MustCompile(`max\s*\(\s*jobstore_published_stage\{stage="([a-z-]+)"\}\s*\)`)
	found := false
	for _, p := range dash.Panels {
		if p.Title != "Published stage" {
			continue
		}
		found = true
		require.Len(t, p.Targets, 1)
		texts := map[string]string{}
		for _, m := range p.FieldConfig.Defaults.Mappings {
			if m.Type == "value" {
				for v, o := range m.Options {
					texts[v] = o.Text
				}
			}
		}
		eval := func(published string) string {
			e := sel.ReplaceAllStringFunc(p.Targets[0].Expr, func(s string) string {
				if sel.FindStringSubmatch(s)[1] == published {
					return "1"
				}
				return "0"
			})
			tv, err := types.Eval(token.NewFileSet(), nil, token.NoPos, strings.ReplaceAll(e, "\n", " "))
			require.NoError(t, err, e)
			v, _ := constant.Int64Val(constant.ToInt(tv.Value))
			return constant.MakeInt64(v).String()
		}
		for _, st := range stages {
			require.Equal(t, st, texts[eval(st)], "published %s", st)
		}
		none := texts[eval("")]
		require.Contains(t, none, "none", "no stage published: %q", none)
	}
	require.True(t, found)
}
