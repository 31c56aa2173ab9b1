package main_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/rogpeppe/go-internal/testscript"
)

// badconfig 'KEY = VALUE' REGEXP: with that line in the docker plugin's
// config (in place of the line setting the same key, else added), `start
// plain --detach` fails with one line that names plugins.hcl:LINE and
// matches REGEXP, and leaves no state, no queue and no resource of the script's.
// plugins.hcl is put back afterwards.
func cmdBadConfig(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: badconfig 'KEY = VALUE' REGEXP")
	}
	path := filepath.Join(ts.Getenv("BOT_BOTTLE_HOME"), "plugins.hcl")
	orig := ts.ReadFile(path)
	defer func() { ts.Check(os.WriteFile(path, []byte(orig), 0o600)) }()
	key := strings.TrimSpace(strings.SplitN(args[0], "=", 2)[0])
	lines := strings.Split(dockerPluginsHCL(ts.Getenv("RUNID"), ts.Getenv("SCRIPTID")), "\n")
	at := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), key+" ") {
			lines[i], at = "    "+args[0], i
		}
	}
	if at < 0 {
		for i, l := range lines {
			if strings.Contains(l, "pids_limit") {
				at = i + 1
			}
		}
		lines = append(lines[:at], append([]string{"    " + args[0]}, lines[at:]...)...)
	}
	ts.Check(os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600))
	home := ts.Getenv("BOT_BOTTLE_HOME")
	count := func() int {
		n := 0
		for _, d := range []string{"state", "queue"} {
			ents, _ := os.ReadDir(filepath.Join(home, d))
			n += len(ents)
		}
		return n
	}
	before := count()
	if err := ts.Exec("bot-bottle", "start", "plain", "--detach"); err == nil {
		ts.Fatalf("start with %s succeeded", args[0])
	}
	want := regexp.MustCompile(regexp.QuoteMeta(path) + ":" + strconv.Itoa(at+1) + `: .*` + args[1])
	var hit []string
	for _, l := range strings.Split(ts.ReadFile("stderr"), "\n") {
		if want.MatchString(l) {
			hit = append(hit, l)
		}
	}
	if len(hit) != 1 {
		ts.Fatalf("stderr has %d lines matching %s, want 1:\n%s", len(hit), want, ts.ReadFile("stderr"))
	}
	if after := count(); after != before {
		ts.Fatalf("state and queue dirs went from %d to %d entries", before, after)
	}
	for _, what := range [][]string{
		{"ps", "-a", "-q", "--filter", "label=test.bot-bottle.script=" + ts.Getenv("SCRIPTID")},
		{"network", "ls", "-q", "--filter", "label=test.bot-bottle.script=" + ts.Getenv("SCRIPTID")},
		{"volume", "ls", "-q", "--filter", "label=test.bot-bottle.script=" + ts.Getenv("SCRIPTID")},
	} {
		ts.Check(ts.Exec("docker", what...))
		if left := strings.TrimSpace(ts.ReadFile("stdout")); left != "" {
			ts.Fatalf("%s left %q", args[0], left)
		}
	}
}
