package backend

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// KindUIDMap is an agent image whose non-root user was given a project
// owner's uid and gid; cached by content like agent images.
const KindUIDMap = "uid-map"

// isRootUser says whether a USER value ("" is the default) runs as uid 0.
func isRootUser(u string) bool {
	name, _, _ := strings.Cut(strings.TrimSpace(u), ":")
	return name == "" || name == "root" || name == "0"
}

// projectOwner is who owns the project directory on the host.
func projectOwner(dir string) (owner, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return owner{}, fmt.Errorf("project directory: %w", err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return owner{}, fmt.Errorf("project directory %s: no owner on this system", dir)
	}
	return owner{uid: int(sys.Uid), gid: int(sys.Gid)}, nil
}

// userPlan is who the agent runs as on a bind-mounted project, and why.
type userPlan struct {
	// remap gives the image's non-root user the project owner's ids.
	remap bool
	proj  owner
	// line is the preflight's "user" value; warning, when set, is what the
	// operator must know before the agent starts.
	line, warning string
}

// planUser decides the agent's user for a bind-mounted project at cwd owned
// by proj. agentUser is agent.hcl's user, imageUser the image's USER when
// known. The agent never becomes root for a project: a root-owned one keeps
// the image's user.
func planUser(cwd string, proj owner, agentUser, imageUser string, imageKnown bool, caps []string) userPlan {
	ids := fmt.Sprintf("uid %d gid %d", proj.uid, proj.gid)
	if proj.gid == 0 {
		ids = fmt.Sprintf("uid %d (in its own group: the project's is root's)", proj.uid)
	}
	switch {
	case agentUser != "":
		p := userPlan{line: agentUser + " (agent.hcl's user; not remapped to " + cwd + "'s owner, " + ids + ")"}
		if isRootUser(agentUser) {
			p.warning = rootWarning(cwd, caps)
		}
		return p
	case imageKnown && isRootUser(imageUser):
		return userPlan{line: "root (the image's user; not remapped)", warning: rootWarning(cwd, caps)}
	case proj.uid == 0:
		who := "the image's user"
		if imageKnown {
			who = imageUser + " (the image's user)"
		}
		return userPlan{
			line:    who + ", not remapped: " + cwd + " belongs to root, and a bottle is never given uid 0",
			warning: "the agent cannot write " + cwd + ": it belongs to root; start with --copy-cwd to work on a copy, or give the project to a non-root user",
		}
	}
	who := "the image's user"
	if imageKnown {
		who = imageUser + " (the image's user)"
	} else {
		who += " (unless it is root)"
	}
	return userPlan{remap: true, proj: proj,
		line: who + " as " + ids + ": remapped to the owner of " + cwd + ", so the agent can write the project and what it writes is that owner's"}
}

// rootWarning says what a root agent can still do to a bind-mounted project.
func rootWarning(cwd string, caps []string) string {
	w := "the agent runs as root on the bind-mounted " + cwd + ": what it creates there belongs to root on the host, and it can change or delete whatever root or everyone may write there"
	if len(caps) == 0 {
		w += "; it has no capabilities, so it cannot chown files or bypass their permissions"
	}
	return w + "; setuid and setgid modes are refused (seccomp)"
}

// dockerfileUser is the USER of a Dockerfile's final stage, as far as it
// can be told without building: set is false when the stage leaves it to
// its base image (from), ok false when it cannot be told at all (a build
// argument in USER, a FROM with nothing after it).
func dockerfileUser(dockerfile string) (user, from string, set, ok bool) {
	type stage struct {
		name, from, user string
		set              bool
	}
	var stages []stage
	text := strings.ReplaceAll(dockerfile, "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			args := f[1:]
			for len(args) > 0 && strings.HasPrefix(args[0], "--") {
				args = args[1:]
			}
			if len(args) == 0 {
				return "", "", false, false
			}
			st := stage{from: args[0], set: strings.EqualFold(args[0], "scratch")}
			if len(args) >= 3 && strings.EqualFold(args[1], "AS") {
				st.name = strings.ToLower(args[2])
			}
			for _, prev := range stages {
				if prev.name != "" && prev.name == strings.ToLower(st.from) {
					st.from, st.user, st.set = prev.from, prev.user, prev.set
				}
			}
			stages = append(stages, st)
		case "USER":
			if len(stages) == 0 || len(f) < 2 {
				return "", "", false, false
			}
			if strings.Contains(f[1], "$") {
				return "", "", false, false
			}
			stages[len(stages)-1].user, stages[len(stages)-1].set = f[1], true
		}
	}
	if len(stages) == 0 {
		return "", "", false, false
	}
	last := stages[len(stages)-1]
	return last.user, last.from, last.set, true
}

// remapEtc gives user's passwd entry the ids of to, in /etc/passwd and
// /etc/group text, as devcontainers' updateRemoteUserUID does: the user's own
// group takes the new gid unless a group already has it. found is false when
// passwd has no such user (a bare uid in USER).
func remapEtc(passwd, group, user string, to owner) (newPasswd, newGroup, home string, from owner, found bool, err error) {
	name, _, _ := strings.Cut(user, ":")
	lines := strings.Split(passwd, "\n")
	login := ""
	for i, l := range lines {
		f := strings.Split(l, ":")
		if len(f) < 7 || strings.HasPrefix(l, "#") || (f[0] != name && f[2] != name) {
			continue
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			return "", "", "", owner{}, false, fmt.Errorf("user %q: malformed /etc/passwd entry", name)
		}
		from, login, home, found = owner{uid, gid}, f[0], f[5], true
		if to.gid == 0 {
			to.gid = gid // root's group is never given either
		}
		f[2], f[3] = strconv.Itoa(to.uid), strconv.Itoa(to.gid)
		lines[i] = strings.Join(f, ":")
		break
	}
	if !found {
		return passwd, group, "", owner{}, false, nil
	}
	newPasswd = strings.Join(lines, "\n")
	glines := strings.Split(group, "\n")
	own, taken, nameTaken := -1, false, false
	for i, l := range glines {
		f := strings.Split(l, ":")
		if len(f) < 3 || strings.HasPrefix(l, "#") {
			continue
		}
		if f[2] == strconv.Itoa(to.gid) {
			taken = true
		}
		if f[0] == login {
			nameTaken = true
			if f[2] == strconv.Itoa(from.gid) {
				own = i
			}
		}
	}
	switch {
	case taken:
	case own >= 0:
		f := strings.Split(glines[own], ":")
		f[2] = strconv.Itoa(to.gid)
		glines[own] = strings.Join(f, ":")
	default:
		g := login
		if nameTaken {
			g = "bottle" + strconv.Itoa(to.gid)
		}
		entry := g + ":x:" + strconv.Itoa(to.gid) + ":"
		if len(glines) > 0 && glines[len(glines)-1] == "" {
			glines = append(glines[:len(glines)-1], entry, "")
		} else {
			glines = append(glines, entry)
		}
	}
	return newPasswd, strings.Join(glines, "\n"), home, from, true, nil
}

// remapped is the image's USER value after its user got the ids of to: a
// name stays, a uid (and a numeric group) takes the new number.
func remapped(user string, to owner) string {
	name, group, hasGroup := strings.Cut(user, ":")
	if _, err := strconv.Atoi(name); err == nil {
		name = strconv.Itoa(to.uid)
	}
	if !hasGroup {
		return name
	}
	if _, err := strconv.Atoi(group); err == nil {
		group = strconv.Itoa(to.gid)
	}
	return name + ":" + group
}

// remapUser returns img with its user given the ids of to, building (once per
// image and ids) a layer with rewritten /etc/passwd and /etc/group and the
// user's home chowned. asUser is set instead when the image's user is a bare
// uid with no passwd entry: then the agent simply runs as to.
func (b *Backend) remapUser(ctx context.Context, c *client.Client, spec sdk.Spec, img imageRef, to owner, imgLabels, launchLabels map[string]string, progress func(sdk.Progress)) (ref imageRef, asUser string, err error) {
	sum := sha256.Sum256([]byte("uid-map v1\x00" + img.ID + "\x00" + img.User + "\x00" + strconv.Itoa(to.uid) + ":" + strconv.Itoa(to.gid)))
	digest := hex.EncodeToString(sum[:])
	ids := fmt.Sprintf("uid %d gid %d", to.uid, to.gid)
	if ref, ok, err := cachedImageOfKind(ctx, c, KindUIDMap, digest); err != nil || ok {
		if ok {
			progress(sdk.Progress{Stage: StageImage, Message: "using cached image " + ref.Name + " (" + img.User + " as " + ids + ")", ID: ref.ID})
		}
		return ref, "", err
	}
	// The image's own account files, read from a container that never runs.
	tmp, err := c.ContainerCreate(ctx, &container.Config{Image: img.ID, Cmd: []string{"/nonexistent"}, Entrypoint: []string{}, Labels: launchLabels}, nil, nil, nil, "")
	if err != nil {
		return img, "", engineErr(c, "read the image's users", err)
	}
	defer func() {
		_ = c.ContainerRemove(context.WithoutCancel(ctx), tmp.ID, container.RemoveOptions{Force: true})
	}()
	passwd, err := readFileFrom(ctx, c, tmp.ID, "/etc/passwd")
	if err != nil {
		return img, "", err
	}
	group, err := readFileFrom(ctx, c, tmp.ID, "/etc/group")
	if err != nil && !isNotFound(err) {
		return img, "", err
	}
	newPasswd, newGroup, home, from, found, err := remapEtc(passwd, group, img.User, to)
	if err != nil {
		return img, "", err
	}
	if !found {
		progress(sdk.Progress{Stage: StageImage, Message: "user " + img.User + " has no /etc/passwd entry; running as " + ids})
		if to.gid == 0 {
			to.gid = to.uid
		}
		return img, strconv.Itoa(to.uid) + ":" + strconv.Itoa(to.gid), nil
	}
	if from == to {
		return img, "", nil
	}
	dir, err := os.MkdirTemp("", "bot-bottle-uidmap")
	if err != nil {
		return img, "", fmt.Errorf("remap user: %w", err)
	}
	defer os.RemoveAll(dir)
	for n, body := range map[string]string{"passwd": newPasswd, "group": newGroup} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(body), 0o644); err != nil {
			return img, "", fmt.Errorf("remap user: %w", err)
		}
	}
	var df strings.Builder
	df.WriteString(fromImage(img.ID))
	df.WriteString("COPY [\"passwd\", \"group\", \"/etc/\"]\n")
	if st, err := c.ContainerStatPath(ctx, tmp.ID, home); err == nil && st.Mode.IsDir() && home != "/" {
		js, _ := json.Marshal([]string{"chown", "-R", strconv.Itoa(to.uid) + ":" + strconv.Itoa(to.gid), home})
		fmt.Fprintf(&df, "USER 0\nRUN %s\nUSER %s\n", js, remapped(img.User, to))
	} else if remapped(img.User, to) != img.User {
		fmt.Fprintf(&df, "USER %s\n", remapped(img.User, to))
	}
	l := map[string]string{}
	for k, v := range imgLabels {
		l[k] = v
	}
	l[LabelKind], l[LabelDigest], l[sdk.LabelAgent] = KindUIDMap, digest, spec.Agent.Name
	tag := "bot-bottle-uidmap/" + repoComponent(spec.Agent.Name) + ":" + digest[:12]
	progress(sdk.Progress{Stage: StageImage, Message: "building " + tag + ": " + img.User + " as " + ids + ", the project's owner"})
	id, err := b.build(ctx, c, dir, []byte(df.String()), tag, l, progress)
	if err != nil {
		return img, "", fmt.Errorf("remap %s to %s: %w", img.User, ids, err)
	}
	ref, err = inspectRef(ctx, c, id)
	ref.Name = tag
	return ref, "", err
}

// readFileFrom reads one small file out of a container.
func readFileFrom(ctx context.Context, c *client.Client, id, path string) (string, error) {
	rc, _, err := c.CopyFromContainer(ctx, id, path)
	if err != nil {
		if isNotFound(err) {
			return "", err
		}
		return "", engineErr(c, "read "+path, err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	if _, err := tr.Next(); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	b, err := io.ReadAll(io.LimitReader(tr, 4<<20))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return string(b), nil
}
