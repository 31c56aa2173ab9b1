package audit

import (
	"encoding/json"
	"path"
	"regexp"
	"strings"
)

// Raise is one thing a Dockerfile change does that raises privilege, for the
// approver to see before approving it.
type Raise struct {
	// What it does, in a few words.
	What string
	// Instruction is the Dockerfile instruction that does it.
	Instruction string
}

func (r Raise) String() string { return r.What + ": " + r.Instruction }

// PrivilegeRaises lists what changing a bottle's Dockerfile from old to new
// does that raises privilege: the image ends up running as root, a file gets
// capabilities (setcap) or a setuid/setgid mode (chmod u+s, 4755, install
// -m, COPY --chmod), or /etc/sudoers is written. Only instructions new adds
// count. A USER root that a later USER undoes is not flagged: that is how an
// approved RUN runs as root, and the agent still runs as its own user.
func PrivilegeRaises(old, new string) []Raise {
	var out []Raise
	if u, ok := finalUser(new); ok && isRoot(u) {
		if was, ok := finalUser(old); !ok || !isRoot(was) {
			out = append(out, Raise{What: "the agent would run as root", Instruction: "USER " + u})
		}
	}
	seen := map[string]int{}
	for _, in := range instructions(old) {
		seen[in]++
	}
	for _, in := range instructions(new) {
		if seen[in] > 0 {
			seen[in]--
			continue
		}
		for _, what := range raisesIn(in) {
			out = append(out, Raise{What: what, Instruction: in})
		}
	}
	return out
}

// instructions splits a Dockerfile into its instructions, continuation
// lines joined, comments and blank lines dropped.
func instructions(dockerfile string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(dockerfile, "\n") {
		t := strings.TrimSpace(line)
		if cur.Len() == 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if strings.HasSuffix(t, "\\") {
			cur.WriteString(strings.TrimSuffix(t, "\\") + " ")
			continue
		}
		cur.WriteString(t)
		out = append(out, strings.Join(strings.Fields(cur.String()), " "))
		cur.Reset()
	}
	if cur.Len() > 0 {
		out = append(out, strings.Join(strings.Fields(cur.String()), " "))
	}
	return out
}

// finalUser is the last USER of a Dockerfile's last stage ("" when it sets
// none; ok is false without a FROM).
func finalUser(dockerfile string) (string, bool) {
	user, ok := "", false
	for _, in := range instructions(dockerfile) {
		kw, rest, _ := strings.Cut(in, " ")
		switch strings.ToUpper(kw) {
		case "FROM":
			user, ok = "", true
		case "USER":
			user = rest
		}
	}
	return user, ok && user != ""
}

func isRoot(user string) bool {
	name, _, _ := strings.Cut(user, ":")
	return name == "root" || name == "0"
}

// A mode that sets setuid or setgid: octal with a 2 to 7 before the
// permission digits, or a symbolic clause granting s.
var (
	octalSetid    = regexp.MustCompile(`^0*[2-7][0-7]{3}$`)
	symbolicSetid = regexp.MustCompile(`^[ugoa]*[+=][rwxXst]*s[rwxXst]*$`)
)

func setidMode(m string) bool {
	if octalSetid.MatchString(m) {
		return true
	}
	for _, clause := range strings.Split(m, ",") {
		if symbolicSetid.MatchString(clause) {
			return true
		}
	}
	return false
}

// raisesIn is what one instruction does that raises privilege.
func raisesIn(in string) []string {
	kw, rest, _ := strings.Cut(in, " ")
	var out []string
	switch strings.ToUpper(kw) {
	case "RUN":
		words := shellWords(rest)
		for i, w := range words {
			switch path.Base(w) {
			case "setcap":
				out = append(out, "gives a file capabilities (setcap)")
			case "chmod":
				// chmod [-R…] MODE FILE…: the first word not an option.
				for _, a := range words[i+1:] {
					if isBoundary(a) {
						break
					}
					if strings.HasPrefix(a, "-") {
						continue
					}
					if setidMode(a) {
						out = append(out, "sets a setuid/setgid mode (chmod "+a+")")
					}
					break
				}
			case "install", "mkdir", "mknod":
				if m := modeFlag(words[i+1:]); m != "" && setidMode(m) {
					out = append(out, "sets a setuid/setgid mode ("+path.Base(w)+" -m "+m+")")
				}
			}
		}
		if strings.Contains(rest, "/etc/sudoers") {
			out = append(out, "touches /etc/sudoers")
		}
	case "COPY", "ADD":
		words := strings.Fields(rest)
		for _, w := range words {
			if m, ok := strings.CutPrefix(w, "--chmod="); ok && setidMode(m) {
				out = append(out, "sets a setuid/setgid mode (--chmod="+m+")")
			}
		}
		if len(words) > 0 && strings.HasPrefix(strings.Trim(words[len(words)-1], `"[],`), "/etc/sudoers") {
			out = append(out, "writes /etc/sudoers")
		}
	}
	return out
}

// modeFlag is the value of -m/--mode among a command's words.
func modeFlag(words []string) string {
	for i, w := range words {
		if isBoundary(w) {
			return ""
		}
		switch {
		case (w == "-m" || w == "--mode") && i+1 < len(words):
			return words[i+1]
		case strings.HasPrefix(w, "--mode="):
			return strings.TrimPrefix(w, "--mode=")
		case strings.HasPrefix(w, "-m") && len(w) > 2:
			return w[2:]
		}
	}
	return ""
}

func isBoundary(w string) bool {
	switch w {
	case ";", "&&", "||", "|", "&", "(", ")":
		return true
	}
	return false
}

// shellWords splits a RUN's command into words, with the shell's command
// separators as words of their own; exec form is read as its argv. Quotes
// are dropped, not parsed: this is for spotting commands, not running them.
func shellWords(cmd string) []string {
	cmd = strings.TrimSpace(cmd)
	for strings.HasPrefix(cmd, "--") { // RUN --mount=… and the like
		_, cmd, _ = strings.Cut(cmd, " ")
		cmd = strings.TrimSpace(cmd)
	}
	var argv []string
	if strings.HasPrefix(cmd, "[") && json.Unmarshal([]byte(cmd), &argv) == nil {
		cmd = strings.Join(argv, " ")
	}
	r := strings.NewReplacer("&&", " && ", "||", " || ", ";", " ; ", "|", " | ", "(", " ( ", ")", " ) ", `"`, " ", "'", " ", "`", " ")
	return strings.Fields(r.Replace(cmd))
}
