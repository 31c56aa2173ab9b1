package audit

import (
	"strings"
	"testing"
)

func TestPrivilegeRaises(t *testing.T) {
	const base = "FROM debian:bookworm-slim\nRUN useradd agent\nUSER agent\nCMD [\"bash\"]\n"
	// What the capability loop appends for a RUN request.
	run := func(cmd string) string {
		return base + "\n# approved request r1\nUSER root\nRUN " + cmd + "\nUSER agent\n"
	}
	for name, tc := range map[string]struct {
		next string
		want []string // a substring of each finding's What, in order
	}{
		"plain run":       {run("apt-get install -y ripgrep"), nil},
		"chmod u+s":       {run("chmod u+s /usr/bin/find"), []string{"chmod u+s"}},
		"chmod g+s":       {run("apt-get install -y x && chmod -R g+s,o-w /srv"), []string{"chmod g+s,o-w"}},
		"chmod 4755":      {run("chmod 4755 /bin/x"), []string{"chmod 4755"}},
		"chmod 04755":     {run("cp a b; chmod 04755 b"), []string{"chmod 04755"}},
		"chmod 2775":      {run("chmod 2775 /srv"), []string{"chmod 2775"}},
		"chmod +s":        {run("find / -name x -exec chmod +s {} ;"), []string{"chmod +s"}},
		"chmod 755":       {run("chmod 755 /bin/x 2024"), nil},
		"chmod 1777":      {run("chmod 1777 /scratch"), nil},
		"chmod u-s":       {run("chmod u-s /bin/x"), nil},
		"install -m":      {run("install -m 4755 a /usr/local/bin/a"), []string{"install -m 4755"}},
		"install --mode=": {run("install --mode=6755 a /b"), []string{"install -m 6755"}},
		"setcap":          {run("setcap cap_net_raw+ep /usr/bin/ping"), []string{"setcap"}},
		"setcap path":     {run("/sbin/setcap cap_net_raw+ep /usr/bin/ping"), []string{"setcap"}},
		"sudoers":         {run("echo 'agent ALL=(ALL) NOPASSWD:ALL' >> /etc/sudoers.d/agent"), []string{"/etc/sudoers"}},
		"exec form":       {base + "RUN [\"chmod\", \"4755\", \"/x\"]\n", []string{"chmod 4755"}},
		"continuation":    {base + "USER root\nRUN apt-get install -y x \\\n && chmod u+s /x\nUSER agent\n", []string{"chmod u+s"}},
		"final root":      {base + "USER root\nRUN true\n", []string{"run as root"}},
		"final uid 0":     {base + "USER 0:0\n", []string{"run as root"}},
		"copy chmod":      {base + "COPY --chmod=4755 x /usr/bin/x\n", []string{"--chmod=4755"}},
		"copy sudoers":    {base + "COPY sudoers /etc/sudoers.d/agent\n", []string{"writes /etc/sudoers"}},
		"unchanged":       {base, nil},
	} {
		got := PrivilegeRaises(base, tc.next)
		if len(got) != len(tc.want) {
			t.Errorf("%s: got %v, want %d findings %v", name, got, len(tc.want), tc.want)
			continue
		}
		for i, w := range tc.want {
			if !strings.Contains(got[i].What, w) || got[i].Instruction == "" {
				t.Errorf("%s: finding %d = %+v, want %q", name, i, got[i], w)
			}
		}
	}
	// What the old Dockerfile already did is not flagged again.
	old := run("chmod u+s /bin/x")
	if got := PrivilegeRaises(old, old+"RUN true\n"); len(got) != 0 {
		t.Errorf("an approved setuid is flagged again: %v", got)
	}
	// An image that already ran as root does not newly run as root.
	rootBase := "FROM x\nUSER root\n"
	if got := PrivilegeRaises(rootBase, rootBase+"RUN true\n"); len(got) != 0 {
		t.Errorf("already root: %v", got)
	}
	if got := PrivilegeRaises(base, run("chmod u+s /x")); got[0].String() != "sets a setuid/setgid mode (chmod u+s): RUN chmod u+s /x" {
		t.Errorf("String() = %q", got[0].String())
	}
}
