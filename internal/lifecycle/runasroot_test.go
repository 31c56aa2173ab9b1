package lifecycle_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/internal/testbackend"
)

// userRig is newRig whose backend reports imageUser as the USER of every
// image it boots, as the docker backend reports an image's configured user.
func userRig(t *testing.T, imageUser string) *rig {
	r := newRig(t)
	be := testbackend.New(filepath.Join(r.env.Home, "tproot"), testbackend.Options{Commit: true, ImageUser: imageUser})
	r.backend = be
	r.env.Backends = inProcess{t, be}
	return r
}

// approved is the tail an approved `touch /x` must add for an image whose
// user is agent: the RUN as root, then the image's user back.
const approved = "USER root\nRUN touch /x\nUSER agent\n"

// An approved RUN runs as root and switches back to the image's own user,
// which no Dockerfile text says for an image agent, nor for a snapshot:
// the user the backend reported when the bottle came up. The approver's
// proposal is what Approve writes.
func TestCapabilityRunsAsRootOnAnImageAgent(t *testing.T) {
	r := userRig(t, "agent")
	ctx := context.Background()
	id := r.detached()
	run := queue.Request{ID: "r1", Identity: id, Kind: queue.KindCapability, Run: "touch /x"}
	p, err := r.env.Propose(run)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(p.Next, approved) {
		t.Fatalf("the RUN on an image whose user is agent does not run as root and switch back:\n%s", p.Next)
	}

	// Stopped (no handle) it is the same: the user is recorded with the
	// launch that came up.
	if err := r.env.Stop(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	if p, err = r.env.Propose(run); err != nil || !strings.HasSuffix(p.Next, approved) {
		t.Fatalf("proposal for the stopped bottle: %v\n%s", err, p.Next)
	}

	// Approved: exactly the proposal is written.
	dir, err := queue.Open(r.env.Home).Dir(id)
	if err != nil {
		t.Fatal(err)
	}
	file(t, dir, "dddddddddddddddd1", queue.Submission{Kind: queue.KindCapability, Run: "touch /x", Reason: "need x"})
	reqs, err := r.env.Requests(ctx)
	if err != nil || len(reqs) != 1 {
		t.Fatalf("requests: %+v, %v\n%s", reqs, err, r.msgs)
	}
	want, err := r.env.Propose(reqs[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.env.Approve(ctx, reqs[0].ID, "user:test"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(r.env.Store.Dir(id), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want.Next || !strings.HasSuffix(string(got), approved) {
		t.Fatalf("approve wrote:\n%s\nthe approver was shown:\n%s", got, want.Next)
	}
}

// A committed bottle's base is FROM its snapshot, whose line says nothing of
// its user: the user is the one reported of the image it was committed from.
func TestCapabilityRunsAsRootOnASnapshot(t *testing.T) {
	r := userRig(t, "agent")
	ctx := context.Background()
	id := r.detached()
	ref, err := r.env.Commit(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.env.Stop(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	p, err := r.env.Propose(queue.Request{ID: "r1", Identity: id, Kind: queue.KindCapability, Run: "touch /x"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.Next, "FROM "+ref+"\n") || !strings.HasSuffix(p.Next, approved) {
		t.Fatalf("the RUN on the snapshot does not run as root and switch back:\n%s", p.Next)
	}
	// Booted from the snapshot, the user is the snapshot's as reported.
	if _, err := r.env.Resume(ctx, id, lifecycle.ResumeOptions{Command: []string{"sleep", "30"}, Detach: true}); err != nil {
		t.Fatal(err)
	}
	if p, err = r.env.Propose(queue.Request{ID: "r2", Identity: id, Kind: queue.KindCapability, Run: "touch /x"}); err != nil || !strings.HasSuffix(p.Next, approved) {
		t.Fatalf("proposal on the resumed snapshot: %v\n%s", err, p.Next)
	}
}

// A Dockerfile agent: the USER its last stage sets wins (it is the text the
// RUN is appended to); a last stage that sets none has its base image's
// user, as reported; a backend that reports none (an earlier plugin) leaves
// the text's.
func TestCapabilityRunsAsRootOnADockerfileAgent(t *testing.T) {
	for _, c := range []struct {
		name, reported, dockerfile, want string
	}{
		{"base image's user", "agent", "FROM host\nRUN true\n", approved},
		{"the text's user", "agent", "FROM host\nUSER builder\n", "USER root\nRUN touch /x\nUSER builder\n"},
		{"an earlier stage's user is not the image's", "agent", "FROM host AS b\nUSER builder\nFROM host\n", approved},
		{"root image", "root", "FROM host\n", "# approved request r1\nRUN touch /x\n"},
		{"not reported", "", "FROM host\nUSER builder\n", "USER root\nRUN touch /x\nUSER builder\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := userRig(t, c.reported)
			dir := filepath.Join(r.env.Home, "agents", "tsh")
			hcl := "description = \"host shell\"\ndockerfile = \"Dockerfile\"\ncommand = [\"sh\", \"-c\", \"exit 0\"]\n"
			if err := os.WriteFile(filepath.Join(dir, "agent.hcl"), []byte(hcl), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(c.dockerfile), 0o600); err != nil {
				t.Fatal(err)
			}
			id := r.detached()
			p, err := r.env.Propose(queue.Request{ID: "r1", Identity: id, Kind: queue.KindCapability, Run: "touch /x"})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(p.Next, c.want) {
				t.Fatalf("proposal:\n%s\nwant it to end with:\n%s", p.Next, c.want)
			}
		})
	}
}
