package main_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// egressproxy ID [RULE...]: run the real egress proxy (the docker plugin's subcommand) for bottle ID
// on loopback, allowed to reach this host's upstreams, with RULEs as its allowlist and its event log where the core
// reads it ($BOT_BOTTLE_HOME/audit/egress/ID.jsonl); $PROXY is its address.
// It is stopped when the script ends.
func cmdEgressProxy(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 {
		ts.Fatalf("usage: egressproxy ID [RULE...]")
	}
	id := args[0]
	dir := filepath.Join(ts.Getenv("BOT_BOTTLE_HOME"), "audit", "egress")
	ts.Check(os.MkdirAll(dir, 0o700))
	rules, err := json.Marshal(map[string]any{"identity": id, "rules": append([]string{}, args[1:]...)})
	ts.Check(err)
	rulesFile := filepath.Join(ts.Getenv("WORK"), "proxy-rules.json")
	ts.Check(os.WriteFile(rulesFile, rules, 0o600))
	cmd := exec.Command(filepath.Join(binDir, "bot-bottle-plugin-docker"), "egress-proxy", "--identity", id, "--rules", rulesFile,
		"--listen", "127.0.0.1:0", "--log", filepath.Join(dir, id+".jsonl"),
		// The script's upstreams run on this host, beside the proxy.
		"--allow-own-host")
	stderr, err := cmd.StderrPipe()
	ts.Check(err)
	ts.Check(cmd.Start())
	ts.Defer(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if l := sc.Text(); strings.Contains(l, "egress proxy listening") {
				if _, after, ok := strings.Cut(l, " addr="); ok {
					addr <- strings.Fields(after)[0]
				}
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	select {
	case a := <-addr:
		ts.Setenv("PROXY", a)
	case <-time.After(10 * time.Second):
		ts.Fatalf("the egress proxy did not say where it listens")
	}
}

// rawhttp REQUEST...: send each REQUEST (a Go string literal's contents,
// so \r\n, \x1b and \u202e work) to $PROXY on a connection of its own, and
// print the status line of each answer.
func cmdRawHTTP(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: rawhttp REQUEST...")
	}
	for _, a := range args {
		req, err := strconv.Unquote(`"` + a + `"`)
		if err != nil {
			ts.Fatalf("rawhttp %q: %v", a, err)
		}
		c, err := net.DialTimeout("tcp", ts.Getenv("PROXY"), 5*time.Second)
		ts.Check(err)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = io.WriteString(c, req)
		ts.Check(err)
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		fmt.Fprintln(ts.Stdout(), strings.TrimSpace(line))
	}
}

// httpserver VAR: serve "hello" over HTTP on loopback until the script
// ends; $VAR is its host:port.
func cmdHTTPServer(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: httpserver VAR")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello\n") }),
		ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	ts.Defer(func() { srv.Close() })
	ts.Setenv(args[0], ln.Addr().String())
}
