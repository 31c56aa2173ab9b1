package backendtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// The promises the core makes to its users and relies on each backend to
// keep: what a user's project, secrets, network, queue and home are to a
// bottle. Each item runs only for a backend that declares the feature in
// its Harness, except the secret's, which every backend must keep.
const (
	ItemProject   = "ProjectAtWorkdir"
	ItemSecret    = "SecretReachesAgentOnly"
	ItemNoNetwork = "NoNetworkWithEmptyAllowlist"
	ItemQueue     = "QueueInboxOnlyAndHelper"
	ItemHomes     = "ListOnlyOwnHome"
	ItemSnapshots = "StopKeepsSnapshotsUntilRemoved"
	ItemHardening = "DeclaredHardening"
	ItemImages    = "DockerfilesBuildAndFallBack"
)

// Egress says how a backend treats Spec.Egress, for ItemNoNetwork.
type Egress int

const (
	// EgressUndeclared skips the network check.
	EgressUndeclared Egress = iota
	// EgressEnforced: the allowlist is enforced, and an empty one means no
	// network at all.
	EgressEnforced
	// EgressNoNetwork: the backend cannot enforce an allowlist, so a bottle
	// never has a network, and Prepare with a non-empty allowlist warns
	// (or refuses).
	EgressNoNetwork
)

// Hardening is what a backend declares about the agent's process, checked
// from inside the bottle (/proc/self/status).
type Hardening struct {
	NoNewPrivs     bool   // no_new_privs is set
	NoCapabilities bool   // the effective capability set is empty
	NonRoot        bool   // the agent's uid is not 0
	UID            string // the agent's numeric uid, "" for unchecked
}

// The secret's name in the agent's environment.
const secretEnv = "BB_CONFORMANCE_SECRET"

func (r *run) project(t *testing.T) {
	if !r.h.Project {
		t.Skip("backend does not declare Harness.Project")
	}
	marker := newIdentity(t)
	for _, copyCwd := range []bool{false, true} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "bb-conf-project"), []byte(marker+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if uid := r.h.ProjectUID; uid != 0 && os.Geteuid() == 0 {
			for _, p := range []string{dir, filepath.Join(dir, "bb-conf-project")} {
				if err := os.Chown(p, uid, uid); err != nil {
					t.Fatal(err)
				}
			}
		}
		out, errOut, st := r.runOnce(t, nil, "sh", "-c", `cat bb-conf-project && echo from-agent > bb-conf-written && echo wrote`,
			func(s *sdk.Spec) { s.Cwd, s.CopyCwd = dir, copyCwd })
		written, werr := os.ReadFile(filepath.Join(dir, "bb-conf-written"))
		if copyCwd {
			if !strings.Contains(out, marker) {
				t.Errorf("project at the workdir: with CopyCwd the agent's working directory has no copy of the project (cat bb-conf-project: %q, stderr %q); copy Spec.Cwd to the agent's workdir", out, errOut)
			}
			if werr == nil {
				t.Errorf("project at the workdir: with CopyCwd the agent wrote %q into the host's project; the host tree must never be written, so copy it, do not mount it", written)
			}
			continue
		}
		if st.Code != 0 || !strings.Contains(out, marker) || !strings.Contains(out, "wrote") {
			t.Errorf("project at the workdir: the agent could not read and write the project in its working directory (exit %d, stdout %q, stderr %q); mount Spec.Cwd read-write at the agent's workdir and start the agent there", st.Code, out, errOut)
		} else if strings.TrimSpace(string(written)) != "from-agent" {
			t.Errorf("project at the workdir: the agent wrote bb-conf-written, but the host's project has %q (%v); mount Spec.Cwd, do not copy it, unless CopyCwd", written, werr)
		}
	}
}

func (r *run) secret(t *testing.T) {
	info := r.getInfo(t)
	ctx := r.ctx(t)
	secret := "s3cr3t-" + newIdentity(t)
	setEnv := func(s *sdk.Spec) { s.Env[secretEnv] = secret }
	spec := r.spec(t, true, "sh", "-c", `while :; do echo "secret:$`+secretEnv+`:"; sleep 1; done`, setEnv)
	plan, handle := r.launchSpec(t, ctx, r.be, spec)
	for _, l := range plan.Preflight {
		if strings.Contains(l.Key+l.Value, secret) {
			t.Errorf("secret: Prepare's preflight line %q shows the passed-through secret; name Env keys, never values", l.Key)
		}
	}
	for _, w := range plan.Warnings {
		if strings.Contains(w, secret) {
			t.Errorf("secret: a Prepare warning shows the passed-through secret; name Env keys, never values")
		}
	}
	if strings.Contains(string(handle.Data), secret) {
		t.Errorf("secret: the handle holds the passed-through secret, and the core stores handles on disk; keep Spec.Env out of Handle.Data")
	}
	out := r.detachAfter(t, ctx, handle, "secret:")
	if !strings.Contains(out, "secret:"+secret+":") {
		t.Errorf("secret: the agent's environment has no %s with the passed-through value (it printed %q); give Spec.Env to the agent's process", secretEnv, out)
	}
	bs, err := r.be.List(ctx)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if strings.Contains(fmt.Sprintf("%+v", bs), secret) {
		t.Errorf("secret: List output holds the passed-through secret; report no Env value")
	}
	if i, err := r.be.Info(ctx); err == nil && strings.Contains(fmt.Sprintf("%+v", i), secret) {
		t.Errorf("secret: Info output holds the passed-through secret")
	}
	c, ok := r.be.(sdk.Committer)
	if !info.Has(sdk.CapCommit) || !ok {
		return
	}
	if r.h.SnapshotContains == nil {
		t.Errorf("secret: the backend commits, so the harness must set SnapshotContains for the suite to look for the secret in a snapshot")
		return
	}
	res, err := c.Commit(ctx, handle, t.TempDir())
	if err != nil {
		t.Fatalf("secret: Commit: %v", err)
	}
	r.removeSnapshotAtEnd(t, spec.Identity, res.Image)
	if in, err := r.h.SnapshotContains(ctx, res.Image, secret); err != nil {
		t.Fatalf("backendtest: SnapshotContains(%s): %v", res.Image, err)
	} else if in {
		t.Errorf("secret: the snapshot %s holds the passed-through secret (docker and podman commit copy the container's env into the image config); keep Spec.Env out of the container's config or scrub the committed image", res.Image)
	}
}

// detachAfter attaches to a running bottle until its output shows want,
// then detaches, and returns the output.
func (r *run) detachAfter(t *testing.T, ctx context.Context, handle sdk.Handle, want string) string {
	t.Helper()
	actx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	out := &lockedBuffer{}
	go func() {
		for !strings.Contains(out.String(), want) && actx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
	}()
	_, _ = r.be.Attach(actx, sdk.AttachRequest{Handle: handle}, sdk.AttachStreams{Stdout: out, Stderr: out})
	return out.String()
}

func (r *run) removeSnapshotAtEnd(t *testing.T, identity, ref string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if r.h.RemoveSnapshot != nil {
			_ = r.h.RemoveSnapshot(ctx, ref)
		}
		_, _ = r.be.Stop(ctx, sdk.StopRequest{Identity: identity, RemoveSnapshots: true})
	})
}

func (r *run) noNetwork(t *testing.T) {
	if r.h.Egress == EgressUndeclared {
		t.Skip("backend does not declare Harness.Egress")
	}
	// Every interface but loopback is a network: with an empty allowlist a
	// bottle must have none (no proxy either, there is nothing to allow).
	out, errOut, st := r.runOnce(t, nil, "cat", "/proc/net/dev", func(s *sdk.Spec) { s.Egress, s.Agent.Egress = nil, nil })
	if st.Code != 0 {
		t.Fatalf("no network with an empty allowlist: cat /proc/net/dev exited %d (stderr %q)", st.Code, errOut)
	}
	if ifs := interfaces(out); len(ifs) > 0 {
		t.Errorf("no network with an empty allowlist: the bottle has network interfaces %v; with Spec.Egress empty give it no network at all (loopback only)", ifs)
	}
	if r.h.Egress != EgressNoNetwork {
		return
	}
	spec := r.spec(t, false, "true", func(s *sdk.Spec) { s.Egress = []string{"conformance.invalid:443"} })
	plan, err := r.be.Prepare(r.ctx(t), spec)
	if err == nil && len(plan.Warnings) == 0 {
		t.Errorf("no network with an empty allowlist: the backend cannot enforce an allowlist, but Prepare with Egress %v neither refused nor warned; say in Plan.Warnings that the allowlist is not applied", spec.Egress)
	}
}

// interfaces lists the interfaces in /proc/net/dev other than loopback.
func interfaces(procNetDev string) []string {
	var ifs []string
	sc := bufio.NewScanner(strings.NewReader(procNetDev))
	for sc.Scan() {
		name, _, ok := strings.Cut(sc.Text(), ":")
		if name = strings.TrimSpace(name); ok && name != "lo" && !strings.Contains(name, "|") {
			ifs = append(ifs, name)
		}
	}
	return ifs
}

func (r *run) queue(t *testing.T) {
	if !r.h.Queue {
		t.Skip("backend does not declare Harness.Queue")
	}
	q := t.TempDir()
	for _, d := range []string{sdk.QueueInbox, "outbox"} {
		if err := os.Mkdir(filepath.Join(q, d), 0o777); err != nil {
			t.Fatal(err)
		}
		_ = os.Chmod(filepath.Join(q, d), 0o777)
	}
	_ = os.Chmod(q, 0o755)
	helperDir := t.TempDir()
	_ = os.Chmod(helperDir, 0o755)
	helper := filepath.Join(helperDir, "bottle")
	const helperText = "#!/bin/sh\necho helper-ok\n"
	if err := os.WriteFile(helper, []byte(helperText), 0o755); err != nil {
		t.Fatal(err)
	}
	// The guest paths are arguments so that a backend that maps guest
	// paths (a fake VM, a host process) can see them.
	script := `q="$2"
echo asked > "$q/inbox/bb-conf-request" && echo inbox-written
echo decided > "$q/outbox/bb-conf-decision" 2>/dev/null
echo decided > "$q/bb-conf-decision" 2>/dev/null
[ -x "$1" ] && "$1"
echo tampered >> "$1" 2>/dev/null
true`
	out, errOut, _ := r.runOnce(t, nil, "sh", "-c", script, "sh", sdk.GuestHelperPath, sdk.GuestQueueDir,
		func(s *sdk.Spec) { s.QueueDir, s.HelperBinary = q, helper })
	if _, err := os.Stat(filepath.Join(q, sdk.QueueInbox, "bb-conf-request")); err != nil || !strings.Contains(out, "inbox-written") {
		t.Errorf("queue: the agent could not write a request into %s/inbox (stdout %q, stderr %q); mount Spec.QueueDir/inbox read-write there", sdk.GuestQueueDir, out, errOut)
	}
	for _, p := range []string{filepath.Join(q, "outbox", "bb-conf-decision"), filepath.Join(q, "bb-conf-decision")} {
		if _, err := os.Stat(p); err == nil {
			rel, _ := filepath.Rel(q, p)
			t.Errorf("queue: the agent wrote %s in the queue outside its inbox; mount Spec.QueueDir read-only at %s and only its inbox read-write", rel, sdk.GuestQueueDir)
		}
	}
	if !strings.Contains(out, "helper-ok") {
		t.Errorf("queue: the helper is not an executable at %s (stdout %q, stderr %q); mount Spec.HelperBinary there", sdk.GuestHelperPath, out, errOut)
	}
	if b, _ := os.ReadFile(helper); string(b) != helperText {
		t.Errorf("queue: the agent changed the helper binary on the host; mount Spec.HelperBinary read-only")
	}
}

func (r *run) homes(t *testing.T) {
	if r.h.NewInHome == nil {
		t.Skip("backend does not declare Harness.NewInHome")
	}
	ctx := r.ctx(t)
	a, b := r.h.NewInHome(t, "confhome"+newIdentity(t)[5:]), r.h.NewInHome(t, "confhome"+newIdentity(t)[5:])
	specA, _ := r.launch(t, ctx, a, true, "sleep", "300")
	specB, _ := r.launch(t, ctx, b, true, "sleep", "300")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = b.Stop(ctx, sdk.StopRequest{Identity: specB.Identity})
	})
	if _, ok := r.listed(t, ctx, a, specA.Identity); !ok {
		t.Fatalf("list only its own home: List does not report %s, launched in its own home", specA.Identity)
	}
	if _, ok := r.listed(t, ctx, a, specB.Identity); ok {
		t.Errorf("list only its own home: List reports %s, a bottle of another home on the same engine; label resources with sdk.LabelHome=sdk.HomeID() and list only those", specB.Identity)
	}
}

func (r *run) snapshots(t *testing.T) {
	info := r.getInfo(t)
	c, ok := r.be.(sdk.Committer)
	if !info.Has(sdk.CapCommit) || !ok {
		t.Skip("backend does not declare commit")
	}
	if r.h.SnapshotContains == nil {
		t.Skip("harness sets no SnapshotContains to look a snapshot up")
	}
	ctx := r.ctx(t)
	spec, handle := r.launch(t, ctx, r.be, true, "sleep", "300")
	var refs []string
	for range 2 {
		res, err := c.Commit(ctx, handle, t.TempDir())
		if err != nil {
			t.Fatalf("stop keeps snapshots: Commit: %v", err)
		}
		r.removeSnapshotAtEnd(t, spec.Identity, res.Image)
		refs = append(refs, res.Image)
	}
	exists := func(ref string) bool {
		_, err := r.h.SnapshotContains(ctx, ref, "")
		if err != nil && !errors.Is(err, sdk.ErrNotFound) {
			t.Fatalf("backendtest: SnapshotContains(%s): %v", ref, err)
		}
		return err == nil
	}
	if _, err := r.be.Stop(ctx, sdk.StopRequest{Handle: &handle, Identity: spec.Identity}); err != nil {
		t.Fatalf("stop keeps snapshots: Stop: %v", err)
	}
	r.assertRemoved(t, ctx, r.be, spec.Identity, true)
	for _, ref := range refs {
		if !exists(ref) {
			t.Fatalf("stop keeps snapshots: Stop removed the snapshot %s; Stop without RemoveSnapshots must keep snapshots, a kept bottle resumes from them", ref)
		}
	}
	if r.h.SnapshotFiles {
		return // the core removes the snapshot dir with the bottle's state
	}
	if r.h.RemoveSnapshot != nil {
		if err := r.h.RemoveSnapshot(ctx, refs[0]); err != nil || exists(refs[0]) {
			t.Errorf("stop keeps snapshots: the harness's RemoveSnapshot could not remove %s (%v)", refs[0], err)
		}
	}
	if _, err := r.be.Stop(ctx, sdk.StopRequest{Identity: spec.Identity, RemoveSnapshots: true}); err != nil {
		t.Fatalf("stop keeps snapshots: Stop with RemoveSnapshots: %v", err)
	}
	if exists(refs[1]) {
		t.Errorf("stop keeps snapshots: Stop with RemoveSnapshots left the snapshot %s; rm must remove every snapshot of the identity (find them by sdk.LabelIdentity)", refs[1])
	}
	r.assertGone(t, ctx, r.be, spec.Identity)
}

func (r *run) hardening(t *testing.T) {
	want := r.h.Hardening
	if want == nil {
		t.Skip("backend declares no Harness.Hardening")
	}
	out, errOut, st := r.runOnce(t, nil, "cat", "/proc/self/status")
	if st.Code != 0 {
		t.Fatalf("declared hardening: cat /proc/self/status exited %d (stderr %q)", st.Code, errOut)
	}
	field := func(name string) string {
		for _, l := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(l, name+":"); ok {
				return strings.TrimSpace(v)
			}
		}
		return ""
	}
	uid := strings.Fields(field("Uid") + " ?")[0]
	if want.NoNewPrivs && field("NoNewPrivs") != "1" {
		t.Errorf("declared hardening: no-new-privileges is declared, but the agent has NoNewPrivs %q; set it on the agent's process", field("NoNewPrivs"))
	}
	if want.NoCapabilities && strings.Trim(field("CapEff"), "0") != "" {
		t.Errorf("declared hardening: no capabilities are declared, but the agent's CapEff is %s; drop them all", field("CapEff"))
	}
	if want.NonRoot && uid == "0" {
		t.Errorf("declared hardening: a non-root agent is declared, but it runs as uid 0")
	}
	if want.UID != "" && uid != want.UID {
		t.Errorf("declared hardening: the agent is declared to run as uid %s, it runs as %s", want.UID, uid)
	}
}

func (r *run) images(t *testing.T) {
	if !r.h.BuildsImages {
		t.Skip("backend does not declare Harness.BuildsImages")
	}
	a := r.h.Agent
	base := "FROM " + a.Image + "\n"
	if a.Dockerfile != "" {
		b, err := os.ReadFile(a.Dockerfile)
		if err != nil {
			t.Fatalf("backendtest: read the agent's Dockerfile: %v", err)
		}
		base = string(b) + "\n"
	}
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	agentDF := write("Dockerfile.agent", base+"RUN echo from-agent-dockerfile > /tmp/bb-conf-image\n")
	bottleDF := write("Dockerfile.bottle", base+"RUN echo from-bottle-dockerfile > /tmp/bb-conf-image\n")
	ctxDir := a.ContextDir
	if ctxDir == "" {
		ctxDir = dir
	}
	useAgentDF := func(s *sdk.Spec) { s.Agent.Dockerfile, s.Agent.ContextDir, s.Agent.Image = agentDF, ctxDir, "" }
	for _, c := range []struct {
		what, want string
		adjust     func(*sdk.Spec)
	}{
		{"an agent Dockerfile", "from-agent-dockerfile", useAgentDF},
		{"a per-bottle Dockerfile", "from-bottle-dockerfile", func(s *sdk.Spec) { useAgentDF(s); s.BottleDockerfile = bottleDF }},
	} {
		out, errOut, st := r.runOnce(t, nil, "cat", "/tmp/bb-conf-image", c.adjust)
		if st.Code != 0 || strings.TrimSpace(out) != c.want {
			t.Errorf("dockerfiles: a bottle from %s read %q (exit %d, stderr %q), want %q: build it and boot from it", c.what, out, st.Code, errOut, c.want)
		}
	}
	ctx := r.ctx(t)
	gone := "bot-bottle-conformance/gone:" + newIdentity(t)
	spec := r.spec(t, false, "cat", "/tmp/bb-conf-image", useAgentDF, func(s *sdk.Spec) { s.CommittedImage, s.Resume = gone, true })
	plan, err := r.be.Prepare(ctx, spec)
	if err != nil {
		t.Fatalf("dockerfiles: Prepare with a committed image that is gone must fall back to the Dockerfile, not fail: %v", err)
	}
	noted := strings.Contains(strings.Join(plan.Warnings, "\n"), gone)
	var progress []string
	handle, err := r.be.Launch(ctx, spec, plan, func(p sdk.Progress) { progress = append(progress, p.Message) })
	if err != nil {
		t.Fatalf("dockerfiles: Launch with a committed image that is gone: %v", err)
	}
	noted = noted || strings.Contains(strings.Join(progress, "\n"), gone)
	var out strings.Builder
	st, err := r.be.Attach(ctx, sdk.AttachRequest{Handle: handle}, sdk.AttachStreams{Stdout: &out, Stderr: io.Discard})
	if err != nil || st.Code != 0 || strings.TrimSpace(out.String()) != "from-agent-dockerfile" {
		t.Errorf("dockerfiles: a bottle whose committed image is gone read %q (%+v, %v); fall back to the next image source", out.String(), st, err)
	}
	if !noted {
		t.Errorf("dockerfiles: the committed image %s is gone and no Plan.Warnings or Progress line says so; tell the operator what it fell back to", gone)
	}
}
