package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/jobstep/jobstore"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func TestAPI(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	store, err := jobstore.New(rdb, jobstore.WithDualWrite(true))
	require.NoError(t, err)
	srv := httptest.NewServer(newHandler(store))
	defer srv.Close()

	do := func(method, path, body string) (int, map[string]any) {
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}

	code, out := do("POST", "/submit-job", `{"service": "comfyui", "priority": 5, "payload": {"prompt": "x"}}`)
	require.Equal(t, http.StatusCreated, code, out)
	id := out["id"].(string)
	require.True(t, mr.Exists("job:"+id))
	require.True(t, mr.Exists("step:"+id), "dual-write is on")

	code, out = do("GET", "/jobs/"+id, "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "pending", out["status"])
	require.Equal(t, "comfyui", out["service_required"])

	for body, want := range map[string]int{
		`{"service": ""}`:                      http.StatusBadRequest,
		`{"service": "s", "priority": 5000}`:   http.StatusBadRequest,
		`{"service": "s", "id": "a:b"}`:        http.StatusBadRequest,
		`{"service": "s", "id": "` + id + `"}`: http.StatusConflict,
		`not json`:                             http.StatusBadRequest,
	} {
		code, out := do("POST", "/submit-job", body)
		require.Equal(t, want, code, "%s: %v", body, out)
		require.NotEmpty(t, out["error"])
	}
	code, _ = do("GET", "/jobs/nope", "")
	require.Equal(t, http.StatusNotFound, code)

	code, out = do("PUT", "/admin/dual-write", `{"enabled": false}`)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, false, out["enabled"])
	code, out = do("GET", "/admin/dual-write", "")
	require.Equal(t, http.StatusOK, code)
	require.EqualValues(t, 1, out["attempted"])

	code, _ = do("DELETE", "/jobs/"+id, "")
	require.Equal(t, http.StatusNoContent, code)
	code, _ = do("DELETE", "/jobs/"+id, "")
	require.Equal(t, http.StatusConflict, code)
}
