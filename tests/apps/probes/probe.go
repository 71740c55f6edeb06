// A static tenant app for tests/test_runtimes.py: prints one line "RESULT {json}" with who and where it runs
// (user, capabilities, which paths it may write, whether the image has a shell), then writes an empty result.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

func main() {
	status := map[string]string{}
	raw, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			status[k] = strings.TrimSpace(v)
		}
	}
	writes := map[string]string{}
	for _, p := range []string{"/evil", "/etc/evil", "/app/evil", "/tmp/ok", "/output/ok"} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			writes[p] = "refused"
		} else {
			writes[p] = "written"
		}
	}
	_, shellErr := exec.LookPath("sh")
	entries, _ := os.ReadDir("/")
	var root []string
	for _, e := range entries {
		root = append(root, e.Name())
	}
	out, _ := json.Marshal(map[string]any{
		"uid": os.Getuid(), "gid": os.Getgid(), "cap_eff": status["CapEff"], "no_new_privs": status["NoNewPrivs"],
		"writes": writes, "shell": shellErr == nil, "root": root, "keyspace": os.Getenv("MYSIMBDP_KEYSPACE"),
	})
	fmt.Println("RESULT " + string(out))
	result := filepath.Join(os.Getenv("MYSIMBDP_OUTPUT_DIR"), "result.json")
	if err := os.WriteFile(result, []byte(`{"rows_ingested": 0, "rows_rejected": 0}`), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
