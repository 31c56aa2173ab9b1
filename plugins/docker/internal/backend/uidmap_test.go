package backend

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestRemapEtc(t *testing.T) {
	passwd := "root:x:0:0:root:/root:/bin/sh\n# comment\nagent:x:1000:1000:agent:/home/agent:/bin/sh\n"
	group := "root:x:0:\nagent:x:1000:\n"
	for name, tc := range map[string]struct {
		user, group string
		to          owner
		passwd, grp string
		found       bool
		home        string
		from        owner
	}{
		"by name": {"agent", group, owner{4321, 4322},
			"root:x:0:0:root:/root:/bin/sh\n# comment\nagent:x:4321:4322:agent:/home/agent:/bin/sh\n",
			"root:x:0:\nagent:x:4322:\n", true, "/home/agent", owner{1000, 1000}},
		"by uid with group": {"1000:1000", group, owner{5, 6},
			"root:x:0:0:root:/root:/bin/sh\n# comment\nagent:x:5:6:agent:/home/agent:/bin/sh\n",
			"root:x:0:\nagent:x:6:\n", true, "/home/agent", owner{1000, 1000}},
		"gid taken": {"agent", group + "staff:x:50:\n", owner{4321, 50},
			"root:x:0:0:root:/root:/bin/sh\n# comment\nagent:x:4321:50:agent:/home/agent:/bin/sh\n",
			group + "staff:x:50:\n", true, "/home/agent", owner{1000, 1000}},
		"no own group": {"agent", "root:x:0:\n", owner{7, 8},
			"root:x:0:0:root:/root:/bin/sh\n# comment\nagent:x:7:8:agent:/home/agent:/bin/sh\n",
			"root:x:0:\nagent:x:8:\n", true, "/home/agent", owner{1000, 1000}},
		"root's group": {"agent", group, owner{4321, 0},
			"root:x:0:0:root:/root:/bin/sh\n# comment\nagent:x:4321:1000:agent:/home/agent:/bin/sh\n",
			group, true, "/home/agent", owner{1000, 1000}},
		"bare uid": {"2000", group, owner{7, 8}, passwd, group, false, "", owner{}},
	} {
		p, g, home, from, found, err := remapEtc(passwd, tc.group, tc.user, tc.to)
		if err != nil || p != tc.passwd || g != tc.grp || found != tc.found || home != tc.home || from != tc.from {
			t.Errorf("%s: got\n%q\n%q home %q from %v found %v err %v", name, p, g, home, from, found, err)
		}
	}
	if _, _, _, _, _, err := remapEtc("agent:x:one:1000:a:/h:/bin/sh\n", group, "agent", owner{1, 1}); err == nil {
		t.Error("a malformed passwd entry was accepted")
	}
}

func TestRemapped(t *testing.T) {
	to := owner{4321, 4322}
	for in, want := range map[string]string{"agent": "agent", "1000": "4321", "1000:1000": "4321:4322", "agent:staff": "agent:staff", "agent:100": "agent:4322"} {
		if got := remapped(in, to); got != want {
			t.Errorf("remapped(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPlanUser(t *testing.T) {
	p := planUser("/p", owner{4321, 4321}, "", "agent", true, nil)
	if !p.remap || p.warning != "" || !strings.Contains(p.line, "agent (the image's user) as uid 4321 gid 4321") {
		t.Errorf("owned by 4321: %+v", p)
	}
	p = planUser("/p", owner{4321, 0}, "", "agent", true, nil)
	if !p.remap || !strings.Contains(p.line, "uid 4321 (in its own group") {
		t.Errorf("group root: %+v", p)
	}
	p = planUser("/p", owner{0, 0}, "", "agent", true, nil)
	if p.remap || !strings.Contains(p.warning, "--copy-cwd") {
		t.Errorf("owned by root: %+v", p)
	}
	for _, u := range []string{"", "root", "0:0"} {
		p = planUser("/p", owner{4321, 4321}, "", u, true, nil)
		if p.remap || !strings.Contains(p.warning, "runs as root") || !strings.Contains(p.warning, "cannot chown") {
			t.Errorf("image user %q: %+v", u, p)
		}
	}
	p = planUser("/p", owner{4321, 4321}, "", "", true, []string{"CHOWN"})
	if strings.Contains(p.warning, "cannot chown") {
		t.Errorf("a root agent with CHOWN is told it cannot chown: %+v", p)
	}
	p = planUser("/p", owner{4321, 4321}, "1234", "agent", true, nil)
	if p.remap || !strings.Contains(p.line, "agent.hcl") {
		t.Errorf("agent.hcl user: %+v", p)
	}
	p = planUser("/p", owner{4321, 4321}, "", "", false, nil)
	if !p.remap || !strings.Contains(p.line, "unless it is root") {
		t.Errorf("unknown image user: %+v", p)
	}
}

func TestDockerfileUser(t *testing.T) {
	for df, want := range map[string]struct {
		user, from string
		set, ok    bool
	}{
		"FROM debian\nUSER agent\nCMD x\n":                                 {"agent", "debian", true, true},
		"FROM debian\n":                                                    {"", "debian", false, true},
		"FROM scratch\nCOPY a /\n":                                         {"", "scratch", true, true},
		"FROM a AS build\nUSER b\nFROM debian\n":                           {"", "debian", false, true},
		"FROM a AS build\nUSER b\nFROM build\n":                            {"b", "a", true, true},
		"FROM x\nUSER agent\n\n# approved\nUSER root\nRUN y\nUSER agent\n": {"agent", "x", true, true},
		"FROM x\nUSER ${U}\n":                                              {"", "", false, false},
		"from --platform=linux/amd64 x\nuser 0\n":                          {"0", "x", true, true},
		"": {"", "", false, false},
	} {
		u, f, s, ok := dockerfileUser(df)
		if u != want.user || f != want.from || s != want.set || ok != want.ok {
			t.Errorf("%q: got %q %q %v %v, want %+v", df, u, f, s, ok, want)
		}
	}
}

// The profile keeps the engine's default and allows the mode-setting calls
// only without setuid/setgid bits.
func TestNoSetidProfile(t *testing.T) {
	b, err := noSetidProfile()
	if err != nil {
		t.Fatal(err)
	}
	var p seccomp.Seccomp
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	def := seccomp.DefaultProfile()
	if p.DefaultAction != def.DefaultAction || len(p.Syscalls) != len(def.Syscalls)+len(modeArg)+2+1 {
		t.Fatalf("default action %v, %d rules (default %d)", p.DefaultAction, len(p.Syscalls), len(def.Syscalls))
	}
	conditional := map[string]int{}
	for _, s := range p.Syscalls {
		for _, n := range s.Names {
			if s.Action == specs.ActAllow && len(s.Args) == 0 && (n == "chmod" || n == "fchmodat" || n == "openat" || n == "openat2") {
				t.Errorf("%s allowed unconditionally", n)
			}
			if n == "read" && s.Action != specs.ActAllow {
				t.Errorf("read not allowed")
			}
			for _, a := range s.Args {
				if a.Op == specs.OpMaskedEqual && a.Value == setidBits && a.ValueTwo == 0 {
					conditional[n]++
				}
			}
		}
	}
	for _, n := range []string{"chmod", "fchmod", "fchmodat", "fchmodat2", "creat", "open", "openat", "mkdir", "mkdirat", "mknod", "mknodat"} {
		if conditional[n] != 1 {
			t.Errorf("%s: %d rules on its mode, want 1", n, conditional[n])
		}
	}
}
